//! The cluster CA and node certificates.
//!
//! The CA's Ed25519 key is derived (HKDF-SHA256) from the cluster secret, and
//! its self-signed certificate is built from fixed parameters, so every node
//! computes the same trust anchor without ever exchanging it. Each node draws
//! a fresh key at start-up and signs its own certificate with the CA key
//! (subject alternative name `<node id>.node.shoal`, usable as server and as
//! client). Both ends verify the other's chain to the CA: a peer holding
//! another cluster's secret is refused during the handshake.

use std::sync::Arc;

use hkdf::Hkdf;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::Sha256;
use shoal_gossip::NodeId;

use crate::TransportError;

/// ALPN protocol of shoal's RPC.
pub const ALPN: &[u8] = b"shoal/1";

/// The TLS name of a node.
pub fn server_name(node: NodeId) -> String {
    format!("{node}.node.shoal")
}

/// PKCS#8 v1 wrapping of an Ed25519 seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a node needs for mutual TLS.
pub struct NodeTls {
    /// The CA certificate (trust anchor).
    pub ca: CertificateDer<'static>,
    /// This node's certificate.
    pub cert: CertificateDer<'static>,
    /// This node's key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls(…)")
    }
}

fn ca_params(key_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("shoal cluster CA {key_id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2200, 1, 1);
    params
}

impl NodeTls {
    /// The CA of `secret` and a fresh certificate for `node`.
    pub fn new(secret: &[u8; 32], node: NodeId) -> Result<NodeTls, TransportError> {
        let hk = Hkdf::<Sha256>::new(Some(b"shoal cluster ca v1"), secret);
        let mut seed = [0u8; 32];
        hk.expand(b"ca signing key", &mut seed)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let ca_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(ed25519_pkcs8(&seed)),
            &PKCS_ED25519,
        )
        .map_err(tls_err)?;
        let mut id = [0u8; 4];
        hk.expand(b"ca key id", &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        let key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let params = ca_params(&key_id);
        let ca_cert = params.self_signed(&ca_key).map_err(tls_err)?;
        let issuer = Issuer::new(params, ca_key);

        let node_key = KeyPair::generate_for(&PKCS_ED25519).map_err(tls_err)?;
        let mut node_params = CertificateParams::new(vec![server_name(node)]).map_err(tls_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, server_name(node));
        node_params.distinguished_name = dn;
        node_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        node_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Generous validity: clocks of a fleet disagree, and a node's
        // certificate lives as long as its process.
        node_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        node_params.not_after = rcgen::date_time_ymd(2200, 1, 1);
        let node_cert = node_params.signed_by(&node_key, &issuer).map_err(tls_err)?;
        Ok(NodeTls {
            ca: ca_cert.der().clone(),
            cert: node_cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(node_key.serialize_der()),
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TransportError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(tls_err)?;
        Ok(Arc::new(roots))
    }

    /// rustls server configuration: TLS 1.3, client certificates required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(tls_err)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// rustls client configuration: TLS 1.3, presents this node's
    /// certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_derives_the_same_ca() {
        let a = NodeTls::new(&[3u8; 32], NodeId(1)).unwrap();
        let b = NodeTls::new(&[3u8; 32], NodeId(2)).unwrap();
        let c = NodeTls::new(&[4u8; 32], NodeId(3)).unwrap();
        assert_eq!(a.ca, b.ca);
        assert_ne!(a.ca, c.ca);
        assert_ne!(a.cert, b.cert);
        a.server_config().unwrap();
        a.client_config().unwrap();
    }
}
