//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres does it: verifiers in
//! Postgres's format, and the server's side of the exchange. The server
//! keeps only `StoredKey` and `ServerKey`, from which no password can be
//! recovered and with which no client can log in.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// Postgres's default `scram_iterations`.
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 18;
const KEY_LEN: usize = 32;

/// A role's SCRAM-SHA-256 verifier:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source failed");
    bytes
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Compares without stopping at the first difference.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        Verifier::with_salt(password, random_bytes(SALT_LEN), ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        // SASLprep as Postgres does: a password it cannot prepare is used
        // as it is.
        let prepared = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_owned());
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations.max(1)).expect("at least one iteration"),
            &salt,
            prepared.as_bytes(),
            &mut salted,
        );
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A verifier no proof matches, for a role without a password: the
    /// exchange runs as for any role and fails at the end.
    pub fn impossible() -> Verifier {
        let mut verifier = Verifier::with_salt("", random_bytes(SALT_LEN), 1);
        verifier.stored_key = random_bytes(KEY_LEN).try_into().expect("32 bytes");
        verifier
    }

    /// Reads a verifier in Postgres's format.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let key = |k: &str| -> Option<[u8; KEY_LEN]> { STANDARD.decode(k).ok()?.try_into().ok() };
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }

    /// Whether `password` is the one this verifier was made from.
    pub fn matches(&self, password: &str) -> bool {
        let again = Verifier::with_salt(password, self.salt.clone(), self.iterations);
        equal(&again.stored_key, &self.stored_key)
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Why an exchange failed: the client sent something SCRAM does not
/// allow (a protocol violation), or a wrong proof.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    Malformed(String),
    WrongProof,
}

fn malformed(what: &str) -> ScramError {
    ScramError::Malformed(format!("malformed SCRAM message: {what}"))
}

/// Channel binding (RFC 5929's `tls-server-end-point`): whether the
/// server offered SCRAM-SHA-256-PLUS, and whether the client took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Not offered: no TLS, or a certificate without a usable hash.
    Unavailable,
    /// Offered, and the client chose SCRAM-SHA-256.
    Declined,
    /// SCRAM-SHA-256-PLUS, bound to the hash of the server's certificate.
    EndPoint(Vec<u8>),
}

const END_POINT_FLAG: &str = "p=tls-server-end-point";

/// The server's side of one exchange, after its first message.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    /// The client's gs2 header, which `c=` must repeat.
    gs2_header: String,
    /// The channel binding data `c=` must carry after the header.
    binding_data: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads the client's first message and returns the server's reply.
    /// The user name in it is ignored, as Postgres ignores it: the startup
    /// packet's is the one that logs in.
    pub fn start(
        client_first: &[u8],
        verifier: Verifier,
        binding: ChannelBinding,
    ) -> Result<(Exchange, String), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or_else(|| malformed("no gs2 header"))?;
        let bare = parts
            .next()
            .ok_or_else(|| malformed("no client-first-message-bare"))?;
        let binding_data = match (flag, binding) {
            ("n", ChannelBinding::Unavailable | ChannelBinding::Declined)
            | ("y", ChannelBinding::Unavailable) => Vec::new(),
            ("y", ChannelBinding::Declined) => {
                return Err(ScramError::Malformed(
                    "SCRAM channel binding negotiation error: the client supports channel \
                     binding but thinks the server does not, and this server does"
                        .into(),
                ))
            }
            (END_POINT_FLAG, ChannelBinding::EndPoint(data)) => data,
            (_, ChannelBinding::EndPoint(_)) if flag.starts_with("p=") => {
                return Err(ScramError::Malformed(format!(
                    "unsupported SCRAM channel-binding type \"{}\"",
                    &flag[2..]
                )))
            }
            ("n" | "y", ChannelBinding::EndPoint(_)) => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not \
                     include channel binding data"
                        .into(),
                ))
            }
            (_, _) if flag.starts_with("p=") => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM \
                     message includes channel binding data"
                        .into(),
                ))
            }
            _ => return Err(malformed("bad channel binding flag")),
        };
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(malformed("bad authorization identity"));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or_else(|| malformed("no nonce"))?;
        let nonce = format!("{client_nonce}{}", STANDARD.encode(random_bytes(NONCE_LEN)));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Exchange {
            verifier,
            gs2_header: format!("{flag},{authzid},"),
            binding_data,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client's final message and returns the server's, which
    /// proves the server knew the verifier.
    pub fn finish(&self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            if let Some(c) = attribute.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attribute.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let binding = binding.ok_or_else(|| malformed("no channel binding"))?;
        let expected = [self.gs2_header.as_bytes(), &self.binding_data].concat();
        if STANDARD.decode(binding).ok() != Some(expected) {
            return Err(ScramError::Malformed(
                "SCRAM channel binding check failed".into(),
            ));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(malformed("nonce does not match"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        if proof.len() != KEY_LEN {
            return Err(malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !equal(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: ChannelBinding = ChannelBinding::Unavailable;

    /// The client's side, as RFC 5802 defines it.
    fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2: &str,
    ) -> (String, String) {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = &attrs[0][2..];
        let salt = STANDARD.decode(&attrs[1][2..]).unwrap();
        let iterations: u32 = attrs[2][2..].parse().unwrap();
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac(&salted, b"Client Key");
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(gs2));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth.as_bytes());
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            format!("v={}", STANDARD.encode(server_signature)),
        )
    }

    #[test]
    fn a_verifier_round_trips_and_hides_the_password() {
        let verifier = Verifier::new("sécret");
        let text = verifier.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!text.contains("sécret"));
        assert_eq!(Verifier::parse(&text), Some(verifier.clone()));
        assert!(verifier.matches("sécret"));
        assert!(!verifier.matches("secret"));
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$x:AA==$AA==:AA==",
            "SCRAM-SHA-256$4096:AA==$AA==:AA==",
        ] {
            assert_eq!(Verifier::parse(bad), None, "{bad}");
        }
    }

    /// RFC 7677's example exchange, for user `user` with password `pencil`.
    #[test]
    fn rfc_7677_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::with_salt("pencil", salt, 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let exchange = Exchange {
            verifier,
            gs2_header: "n,,".into(),
            binding_data: Vec::new(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            nonce: nonce.into(),
        };
        let client_final =
            format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            exchange.finish(client_final.as_bytes()),
            Ok("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_owned())
        );
    }

    #[test]
    fn the_exchange_accepts_the_right_proof_only() {
        let verifier = Verifier::new("pencil");
        let bare = "n=,r=rOprNGfwEbeRWgbNEkqO";
        for (password, ok) in [("pencil", true), ("pen", false)] {
            let (exchange, server_first) =
                Exchange::start(format!("n,,{bare}").as_bytes(), verifier.clone(), NONE).unwrap();
            assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
            let (message, expected) = client_final(password, bare, &server_first, "n,,");
            let result = exchange.finish(message.as_bytes());
            match ok {
                true => assert_eq!(result, Ok(expected)),
                false => assert_eq!(result, Err(ScramError::WrongProof)),
            }
        }
        // A role without a password never logs in.
        let (exchange, server_first) = Exchange::start(
            format!("n,,{bare}").as_bytes(),
            Verifier::impossible(),
            NONE,
        )
        .unwrap();
        let (message, _) = client_final("", bare, &server_first, "n,,");
        assert_eq!(
            exchange.finish(message.as_bytes()),
            Err(ScramError::WrongProof)
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let verifier = Verifier::new("pencil");
        for first in [
            "",
            "n",
            "n,,",
            "x,,n=,r=abc",
            "n,,n=,r=",
            "p=tls-server-end-point,,n=,r=a",
        ] {
            assert!(
                matches!(
                    Exchange::start(first.as_bytes(), verifier.clone(), NONE),
                    Err(ScramError::Malformed(_))
                ),
                "{first}"
            );
        }
        let (exchange, server_first) = Exchange::start(b"n,,n=,r=abc", verifier, NONE).unwrap();
        let nonce = &server_first.split(',').next().unwrap()[2..];
        for last in [
            String::new(),
            "c=biws".into(),
            format!("c=biws,r=wrong,p={}", STANDARD.encode([0u8; 32])),
            format!("c=eSws,r={nonce},p={}", STANDARD.encode([0u8; 32])),
            format!("c=biws,r={nonce},p=!!"),
            format!("c=biws,r={nonce},p={}", STANDARD.encode([0u8; 8])),
        ] {
            assert!(
                matches!(
                    exchange.finish(last.as_bytes()),
                    Err(ScramError::Malformed(_))
                ),
                "{last}"
            );
        }
    }

    #[test]
    fn channel_binding_is_checked_and_negotiated() {
        let verifier = Verifier::new("pencil");
        let bare = "n=,r=abc";
        let end_point = ChannelBinding::EndPoint(vec![1, 2, 3]);
        let gs2 = "p=tls-server-end-point,,";
        let (exchange, server_first) = Exchange::start(
            format!("{gs2}{bare}").as_bytes(),
            verifier.clone(),
            end_point.clone(),
        )
        .unwrap();
        // `c=` carries the header and the certificate's hash.
        let bound = String::from_utf8([gs2.as_bytes(), &[1, 2, 3]].concat().to_vec()).unwrap();
        let (message, expected) = client_final("pencil", bare, &server_first, &bound);
        assert_eq!(exchange.finish(message.as_bytes()), Ok(expected));
        let (unbound, _) = client_final("pencil", bare, &server_first, gs2);
        assert!(matches!(
            exchange.finish(unbound.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        // Flags that do not go with the mechanism are refused: a PLUS
        // exchange without binding, a downgrade, and binding on plain
        // SCRAM.
        for (first, binding) in [
            ("n,,", end_point.clone()),
            ("y,,", end_point.clone()),
            ("p=tls-unique,,", end_point),
            ("y,,", ChannelBinding::Declined),
            ("p=tls-server-end-point,,", ChannelBinding::Declined),
            ("p=tls-server-end-point,,", NONE),
        ] {
            assert!(
                matches!(
                    Exchange::start(
                        format!("{first}{bare}").as_bytes(),
                        verifier.clone(),
                        binding
                    ),
                    Err(ScramError::Malformed(_))
                ),
                "{first}"
            );
        }
        // A client that supports binding, with a server that offers none.
        assert!(Exchange::start(format!("y,,{bare}").as_bytes(), verifier, NONE).is_ok());
    }
}
