//! Security set up when the server starts: the login method, the
//! bootstrap superuser and its password, and the TLS certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use pgwire::tokio::TlsAcceptor;
use ring::digest;
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

/// The server's TLS: how connections are accepted, and what SCRAM binds
/// them with.
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    /// The `tls-server-end-point` channel binding data of the server's
    /// certificate (RFC 5929), when its signature names a hash.
    pub end_point: Option<Vec<u8>>,
}

/// TLS for the certificate chain and key in PEM files. It speaks TLS 1.2
/// and 1.3, and takes `postgresql` as ALPN protocol, which direct TLS
/// connections (`sslnegotiation=direct`) ask for.
pub fn server_tls(cert: &Path, key: &Path) -> anyhow::Result<ServerTls> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", cert.display()))?;
    let Some(leaf) = certs.first() else {
        bail!("{} holds no certificate", cert.display());
    };
    let end_point = server_end_point(leaf);
    if end_point.is_none() {
        tracing::warn!(
            "the certificate's signature algorithm names no hash SCRAM can bind with: \
             SCRAM-SHA-256-PLUS is not offered"
        );
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
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

/// RFC 5929's `tls-server-end-point`: the certificate hashed with its
/// signature's hash, SHA-256 in place of MD5 and SHA-1. `None` for a
/// signature without one of those hashes (Ed25519, RSA-PSS), as Postgres.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, .. }
    let (certificate, _) = der_element(cert, SEQUENCE)?;
    let (_, rest) = der_element(certificate, SEQUENCE)?;
    let (algorithm, _) = der_element(rest, SEQUENCE)?;
    let (oid, _) = der_element(algorithm, OBJECT_IDENTIFIER)?;
    let (family, last) = oid.split_at(oid.len().checked_sub(1)?);
    let hash = match (family, last[0]) {
        (RSA, 0x04 | 0x05 | 0x0b) => &digest::SHA256,
        (RSA, 0x0c) => &digest::SHA384,
        (RSA, 0x0d) => &digest::SHA512,
        (ECDSA_SHA2, 0x02) => &digest::SHA256,
        (ECDSA_SHA2, 0x03) => &digest::SHA384,
        (ECDSA_SHA2, 0x04) => &digest::SHA512,
        _ if oid == ECDSA_SHA1 => &digest::SHA256,
        _ => return None,
    };
    Some(digest::digest(hash, cert).as_ref().to_vec())
}

const SEQUENCE: u8 = 0x30;
const OBJECT_IDENTIFIER: u8 = 0x06;

/// The contents of the DER element at the start of `bytes`, if its tag
/// is `tag`, and the bytes after it.
fn der_element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (size, after) = rest.split_at(n);
        rest = after;
        size.iter().fold(0, |len, &b| len << 8 | usize::from(b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's outline: an empty to-be-signed part, the signature
    /// algorithm `oid`, and a signature.
    fn certificate(oid: &[u8]) -> Vec<u8> {
        let mut algorithm = vec![OBJECT_IDENTIFIER, oid.len() as u8];
        algorithm.extend_from_slice(oid);
        algorithm.extend_from_slice(&[0x05, 0x00]);
        let mut body = vec![SEQUENCE, 0x00, SEQUENCE, algorithm.len() as u8];
        body.extend_from_slice(&algorithm);
        body.extend_from_slice(&[0x03, 0x02, 0x00, 0xff]);
        // A long-form length, as real certificates have.
        let mut cert = vec![SEQUENCE, 0x81, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    #[test]
    fn the_end_point_hash_follows_the_signature() {
        let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let sha384_ecdsa = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        let ed25519 = [0x2b, 0x65, 0x70];
        for (oid, hash) in [
            (&sha256_rsa[..], Some(&digest::SHA256)),
            (&sha384_ecdsa[..], Some(&digest::SHA384)),
            (&sha1_rsa[..], Some(&digest::SHA256)),
            (&ed25519[..], None),
        ] {
            let cert = certificate(oid);
            let expected = hash.map(|h| digest::digest(h, &cert).as_ref().to_vec());
            assert_eq!(server_end_point(&cert), expected, "{oid:x?}");
        }
        // Cut anywhere, the outline is not read past its end.
        let cert = certificate(&sha256_rsa);
        for len in 0..cert.len() {
            assert_eq!(server_end_point(&cert[..len]), None, "{len}");
        }
    }
}
