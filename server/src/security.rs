//! Security set up when the server starts: the login method, the
//! bootstrap superuser and its password, and the TLS certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use pgwire::tokio::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::engine::Engine;
use crate::login::AuthMethod;
use crate::scram::Verifier;

/// `--auth`, or its default: `trust` on loopback only, `scram` beyond.
pub fn login_method(chosen: Option<AuthMethod>, listening: SocketAddr) -> AuthMethod {
    let loopback = listening.ip().is_loopback();
    match chosen {
        Some(AuthMethod::Trust) if !loopback => {
            tracing::warn!(
                %listening,
                "--auth trust beyond loopback: anyone who reaches this port logs in as any role \
                 without a password"
            );
            AuthMethod::Trust
        }
        Some(method) => method,
        None if loopback => AuthMethod::Trust,
        None => AuthMethod::Scram,
    }
}

/// The superuser's password: `--superuser-password-file`'s first line,
/// else `EDDY_SUPERUSER_PASSWORD`.
pub fn superuser_password(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!("cannot read the superuser password from {}", file.display())
        })?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        if password.is_empty() {
            bail!("{} holds no password on its first line", file.display());
        }
        return Ok(Some(password));
    }
    Ok(std::env::var("EDDY_SUPERUSER_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty()))
}

/// Makes sure the superuser exists, with its password when one is given.
/// A method that asks for passwords needs it to have one.
pub fn bootstrap_superuser(
    engine: &Engine,
    name: &str,
    password: Option<&str>,
    method: AuthMethod,
) -> anyhow::Result<()> {
    let verifier = password.map(|p| Verifier::new(p).to_string());
    let role = engine
        .catalog
        .roles()
        .bootstrap(name, verifier)
        .context("cannot create the superuser")?;
    if method != AuthMethod::Trust && role.password.is_none() {
        bail!(
            "--auth {} needs a password for superuser \"{name}\": set EDDY_SUPERUSER_PASSWORD or \
             --superuser-password-file",
            match method {
                AuthMethod::Password => "password",
                _ => "scram",
            }
        );
    }
    Ok(())
}

/// A TLS acceptor for the certificate chain and key in PEM files. It
/// speaks TLS 1.2 and 1.3, and takes `postgresql` as ALPN protocol, which
/// direct TLS connections (`sslnegotiation=direct`) ask for.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    // ring, as pgwire's SCRAM uses; it has no post-quantum key exchange,
    // which rustls marks by deprecating its provider.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
