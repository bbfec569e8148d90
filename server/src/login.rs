//! Logging in: the startup packet names a role, which must exist and may
//! log in; `--auth` decides how it proves who it is (nothing, a password
//! in clear, or SCRAM-SHA-256, with channel binding over TLS), and
//! `--tls-required` refuses clients that did not ask for TLS first.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use eddy_catalog::roles::Role;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::PgWireError;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily, Startup};
use pgwire::messages::PgWireBackendMessage;

use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::handler::cursor::SESSION_KEY;
use crate::scram::{ChannelBinding, Exchange, ScramError, Verifier};

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    /// No proof: any role that may log in is let in by name.
    Trust,
    /// The password in clear (use it over TLS only), checked against the
    /// role's SCRAM verifier.
    Password,
    /// SCRAM-SHA-256: the password never crosses the wire.
    Scram,
}

/// The server's login rules, shared by every connection.
pub struct LoginPolicy {
    pub method: AuthMethod,
    pub tls_required: bool,
    /// The certificate's `tls-server-end-point` data, which lets SCRAM
    /// over TLS offer channel binding.
    end_point: Option<Vec<u8>>,
    connections: Arc<ConnectionManager>,
    keys: RandomPidSecretKeyGenerator,
}

impl LoginPolicy {
    pub fn new(
        method: AuthMethod,
        tls_required: bool,
        end_point: Option<Vec<u8>>,
        connections: Arc<ConnectionManager>,
    ) -> Self {
        LoginPolicy {
            method,
            tls_required,
            end_point,
            connections,
            keys: RandomPidSecretKeyGenerator::default(),
        }
    }

    /// The channel binding data SCRAM can offer `client`.
    fn end_point(&self, client: &impl ClientInfo) -> Option<&[u8]> {
        self.end_point.as_deref().filter(|_| client.is_secure())
    }
}

/// Where one connection is in logging in.
#[derive(Debug, Default)]
pub enum Login {
    #[default]
    AwaitingStartup,
    AwaitingPassword(Role),
    AwaitingScramFirst(Role),
    AwaitingScramFinal(Role, Box<Exchange>),
    Done,
}

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

impl Login {
    /// Reads the startup packet: refuses the client, asks it for a
    /// password, or lets it in.
    pub async fn start<C>(
        &mut self,
        client: &mut C,
        policy: &LoginPolicy,
        engine: &Engine,
        startup: &Startup,
    ) -> Result<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        protocol_negotiation(client, startup).await?;
        // Who the session is and acts as comes from the server, logging
        // in and SET, never from the startup packet.
        let session = client.metadata().get(SESSION_KEY).cloned();
        save_startup_parameters_to_metadata(client, startup);
        for key in ["role", "session_authorization", SESSION_KEY] {
            client.metadata_mut().remove(key);
        }
        if let Some(session) = session {
            client
                .metadata_mut()
                .insert(SESSION_KEY.to_owned(), session);
        }
        let user = client.metadata().get("user").cloned().ok_or_else(|| {
            EddyError::InvalidAuthorization(
                "no PostgreSQL user name specified in startup packet".into(),
            )
        })?;
        if policy.tls_required && !client.is_secure() {
            return Err(EddyError::InvalidAuthorization(format!(
                "connection refused for user \"{user}\": the server requires TLS (connect with \
                 sslmode=require)"
            )));
        }
        let role = engine.catalog.roles().by_name(&user).ok_or_else(|| {
            EddyError::InvalidAuthorization(format!("role \"{user}\" does not exist"))
        })?;
        if !role.login {
            return Err(EddyError::InvalidAuthorization(format!(
                "role \"{user}\" is not permitted to log in"
            )));
        }
        let (request, next) = match policy.method {
            AuthMethod::Trust => return self.finish(client, policy, &role).await,
            AuthMethod::Password => (
                Authentication::CleartextPassword,
                Login::AwaitingPassword(role),
            ),
            AuthMethod::Scram => {
                // As Postgres lists them: with binding first, over TLS.
                let mut mechanisms = vec![SCRAM_SHA_256.to_owned()];
                if policy.end_point(client).is_some() {
                    mechanisms.insert(0, SCRAM_SHA_256_PLUS.to_owned());
                }
                (
                    Authentication::SASL(mechanisms),
                    Login::AwaitingScramFirst(role),
                )
            }
        };
        client.set_state(PgWireConnectionState::AuthenticationInProgress);
        client
            .send(PgWireBackendMessage::Authentication(request))
            .await
            .map_err(PgWireError::from)?;
        *self = next;
        Ok(())
    }

    /// Reads a password message: a password, or a step of SCRAM.
    pub async fn answer<C>(
        &mut self,
        client: &mut C,
        policy: &LoginPolicy,
        message: PasswordMessageFamily,
    ) -> Result<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let body = match message {
            PasswordMessageFamily::Raw(body) => Bytes::from(body),
            _ => return Err(unexpected()),
        };
        match std::mem::take(self) {
            Login::AwaitingPassword(role) => {
                let password = cstring(&body)?;
                let verifier = role.password.as_deref().and_then(Verifier::parse);
                match verifier {
                    Some(v) if v.matches(password) => self.finish(client, policy, &role).await,
                    _ => Err(EddyError::InvalidPassword(role.name)),
                }
            }
            Login::AwaitingScramFirst(role) => {
                let (mechanism, data) = sasl_initial_response(&body)?;
                let binding = match (mechanism, policy.end_point(client)) {
                    (SCRAM_SHA_256_PLUS, Some(data)) => ChannelBinding::EndPoint(data.to_vec()),
                    (SCRAM_SHA_256, Some(_)) => ChannelBinding::Declined,
                    (SCRAM_SHA_256, None) => ChannelBinding::Unavailable,
                    _ => {
                        return Err(EddyError::ProtocolViolation(format!(
                            "SASL authentication mechanism \"{mechanism}\" is not supported"
                        )))
                    }
                };
                let verifier = role
                    .password
                    .as_deref()
                    .and_then(Verifier::parse)
                    .unwrap_or_else(Verifier::impossible);
                let (exchange, server_first) =
                    Exchange::start(data, verifier, binding).map_err(|e| scram_error(e, &role))?;
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(server_first.into_bytes().into()),
                    ))
                    .await
                    .map_err(PgWireError::from)?;
                *self = Login::AwaitingScramFinal(role, Box::new(exchange));
                Ok(())
            }
            Login::AwaitingScramFinal(role, exchange) => {
                let server_final = exchange.finish(&body).map_err(|e| scram_error(e, &role))?;
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLFinal(server_final.into_bytes().into()),
                    ))
                    .await
                    .map_err(PgWireError::from)?;
                self.finish(client, policy, &role).await
            }
            Login::AwaitingStartup | Login::Done => Err(unexpected()),
        }
    }

    /// Lets the client in: its keys for cancel requests, the server's
    /// parameters, and ReadyForQuery.
    async fn finish<C>(&mut self, client: &mut C, policy: &LoginPolicy, role: &Role) -> Result<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret_key) = policy.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = policy.connections.register(pid, secret_key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.is_superuser = role.superuser;
        finish_authentication(client, &parameters).await?;
        *self = Login::Done;
        Ok(())
    }
}

fn unexpected() -> EddyError {
    EddyError::ProtocolViolation("unexpected password message".into())
}

fn scram_error(error: ScramError, role: &Role) -> EddyError {
    match error {
        ScramError::Malformed(message) => EddyError::ProtocolViolation(message),
        ScramError::WrongProof => EddyError::InvalidPassword(role.name.clone()),
    }
}

/// A password message's body: one NUL-terminated string.
fn cstring(body: &[u8]) -> Result<&str> {
    let end = body
        .iter()
        .position(|b| *b == 0)
        .filter(|end| *end + 1 == body.len())
        .ok_or_else(|| EddyError::ProtocolViolation("malformed password message".into()))?;
    std::str::from_utf8(&body[..end])
        .map_err(|_| EddyError::ProtocolViolation("password is not UTF-8".into()))
}

/// SASLInitialResponse: the mechanism, then the length of the data and the
/// data (-1 for none).
fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8])> {
    let malformed = || EddyError::ProtocolViolation("malformed SASLInitialResponse message".into());
    let end = body.iter().position(|b| *b == 0).ok_or_else(malformed)?;
    let mechanism = std::str::from_utf8(&body[..end]).map_err(|_| malformed())?;
    let rest = &body[end + 1..];
    let length = rest
        .get(..4)
        .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(malformed)?;
    let data = &rest[4..];
    if usize::try_from(length).ok() != Some(data.len()) {
        return Err(malformed());
    }
    Ok((mechanism, data))
}

/// The key that marks a server-internal session (the console's), which
/// acts as the bootstrap superuser. No client can set it: startup
/// parameters and settings never hold a NUL.
pub const INTERNAL_SESSION: &str = "\0internal";

/// The role the session acts as: `SET ROLE`'s, else `SET SESSION
/// AUTHORIZATION`'s, else the one that logged in.
pub fn current_role(vars: &HashMap<String, String>) -> Option<&str> {
    match vars.get("role").map(String::as_str) {
        Some(role) if !role.eq_ignore_ascii_case("none") => Some(role),
        _ => vars
            .get("session_authorization")
            .or_else(|| vars.get("user"))
            .map(String::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_messages_are_read_with_bounds() {
        assert_eq!(cstring(b"secret\0").unwrap(), "secret");
        for bad in [&b""[..], b"secret", b"a\0b\0"] {
            assert!(cstring(bad).is_err());
        }
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"n,,");
        assert_eq!(
            sasl_initial_response(&body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,"[..])
        );
        for cut in 0..body.len() {
            assert!(sasl_initial_response(&body[..cut]).is_err(), "{cut}");
        }
        let mut none = b"SCRAM-SHA-256\0".to_vec();
        none.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(sasl_initial_response(&none).is_err());
    }
}
