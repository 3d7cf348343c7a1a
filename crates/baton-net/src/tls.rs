//! TLS for both listeners, from PEM files: one certificate and key per node, and the CA that
//! signed every node's certificate. The public API uses server TLS; the Raft port uses mutual
//! TLS, on top of the cluster secret: each side's certificate must come from the cluster's CA
//! and name a node ([`node_name`]): the node dialed must name the very node meant, and a
//! dialer must name some node (a certificate the CA signed for anything else is refused). All
//! cryptography is `ring`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

/// The DNS name (a subject alternative name) that node `id`'s certificate carries for the
/// Raft port: `node-<id>.baton`. Peers check it, not the host in the node's address.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.baton")
}

/// Whether `name` is some node's [`node_name`].
fn is_node_name(name: &str) -> bool {
    name.strip_prefix("node-")
        .and_then(|rest| rest.strip_suffix(".baton"))
        .is_some_and(|id| id.parse::<u64>().is_ok_and(|n| n.to_string() == id))
}

/// The Raft port's check of a dialer's certificate: the CA's (webpki's verifier), and then
/// that it names a node.
#[derive(Debug)]
struct NodeCertificates(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for NodeCertificates {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let names_a_node = webpki::EndEntityCert::try_from(end_entity)
            .is_ok_and(|cert| cert.valid_dns_names().any(is_node_name));
        if names_a_node {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Where a node's TLS material lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA certificate(s) that signed the nodes' certificates (PEM).
    pub ca: PathBuf,
}

/// Why TLS could not be set up. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("cannot use {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the material (key does not match, bad certificate).
    #[error("invalid TLS material: {0}")]
    Invalid(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File { path: path.to_path_buf(), reason: reason.to_string() }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid(e.to_string()))?;
    }
    Ok(roots)
}

/// Makes `ring` the process's default TLS provider (idempotent). Call it before building any
/// HTTP client that does not get a ready TLS configuration: Baton builds rustls without a
/// built-in default, to keep aws-lc-rs (a long C build) out.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS configuration that trusts nothing, for HTTP clients that only ever speak plain HTTP:
/// reqwest otherwise loads the system's CA certificates when a client is built, and a
/// `FROM scratch` container has none.
pub fn plain_http_only() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server TLS for the public API (no client certificates).
pub fn api_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Mutual TLS for the Raft port: a client must present a certificate signed by the CA that
/// names a node ([`node_name`]).
pub fn raft_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider())
            .build()
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_client_cert_verifier(Arc::new(NodeCertificates(verifier)))
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    // Raft RPCs on framed connections; leader forwarding on HTTP/2.
    config.alpn_protocols = vec![crate::frame::ALPN.to_vec(), b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The client side of the Raft port's mutual TLS: trusts the CA, presents this node's
/// certificate, and expects the peer's to name the node dialed (the dialer asks for
/// [`node_name`] of its id).
pub fn raft_client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_exactly_node_dash_id_dot_baton() {
        assert_eq!(node_name(7), "node-7.baton");
        assert!(is_node_name("node-7.baton"));
        assert!(is_node_name(&node_name(u64::MAX)));
        for other in
            ["node-07.baton", "node-.baton", "node-x.baton", "node-7.baton.evil", "7.baton"]
        {
            assert!(!is_node_name(other), "{other}");
        }
    }
}
