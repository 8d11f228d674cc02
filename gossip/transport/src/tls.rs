//! The cluster CA and node certificates.
//!
//! The CA's Ed25519 key is derived (HKDF-SHA256) from the cluster secret, and
//! its self-signed certificate is built from fixed parameters, so every node
//! computes the same trust anchor without ever exchanging it. Each node draws
//! a fresh key at start-up and signs its own certificate with the CA key
//! (subject alternative name `<node id>.node.shoal`, usable as server and as
//! client). Both ends verify the other's chain to the CA: a peer holding
//! another cluster's secret is refused during the handshake.

use std::net::IpAddr;
use std::sync::Arc;

use hkdf::Hkdf;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
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

fn ca_params(what: &str, key_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("shoal {what} {key_id}"));
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
        let params = ca_params("cluster CA", &key_id);
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

/// The TLS of the HTTP API: a CA of its own, derived from the cluster
/// secret like the RPC's, and this node's server certificate signed by it.
///
/// ECDSA P-256 rather than the RPC's Ed25519: browsers do not accept
/// Ed25519 certificates, and the web UI is served by the same API. Every
/// node derives the same CA key, so one `api-ca.pem` (any node's) lets a
/// client check every node; the self-signed CA certificate's bytes differ
/// from node to node (ECDSA signatures are randomized) but name the same
/// subject and key, which is what a client trusts.
pub struct ApiTls {
    /// The CA certificate, PEM (what clients trust: `api-ca.pem`).
    pub ca_pem: String,
    /// The CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's API certificate.
    pub cert: CertificateDer<'static>,
    /// Its key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiTls(…)")
    }
}

/// The API CA's signing key: a P-256 scalar drawn from HKDF of the secret
/// (a counter skips the rare output that is not a valid scalar).
fn api_ca_key(secret: &[u8; 32]) -> Result<(KeyPair, String), TransportError> {
    use p256::pkcs8::EncodePrivateKey;
    let hk = Hkdf::<Sha256>::new(Some(b"shoal api ca v1"), secret);
    for counter in 0u8..=255 {
        let mut seed = [0u8; 32];
        hk.expand(
            &[b"ca signing key ".as_slice(), &[counter]].concat(),
            &mut seed,
        )
        .expect("32 bytes is a valid HKDF-SHA256 output length");
        let Ok(sk) = p256::SecretKey::from_slice(&seed) else {
            continue;
        };
        let der = sk.to_pkcs8_der().map_err(tls_err)?;
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()),
            &PKCS_ECDSA_P256_SHA256,
        )
        .map_err(tls_err)?;
        let mut id = [0u8; 4];
        hk.expand(b"ca key id", &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        return Ok((key, id.iter().map(|b| format!("{b:02x}")).collect()));
    }
    Err(tls_err("no valid P-256 key in 256 HKDF outputs"))
}

/// Whether `name` can be a DNS name in a certificate.
fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl ApiTls {
    /// The API CA of `secret` and a fresh certificate for this node's API,
    /// valid for `names` (host names; those that cannot be DNS names are
    /// left out) and `ips`, besides `localhost`, the loopback addresses and
    /// `<node>.node.shoal`.
    pub fn new(
        secret: &[u8; 32],
        node: NodeId,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<ApiTls, TransportError> {
        let (ca_key, key_id) = api_ca_key(secret)?;
        let params = ca_params("API CA", &key_id);
        let ca_cert = params.self_signed(&ca_key).map_err(tls_err)?;
        let issuer = Issuer::new(params, ca_key);

        let mut sans: Vec<String> = vec!["localhost".into(), server_name(node)];
        for n in names {
            let n = n.to_ascii_lowercase();
            if dns_name(&n) && !sans.contains(&n) {
                sans.push(n);
            }
        }
        let mut all_ips: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        sans.extend(all_ips.iter().map(IpAddr::to_string));
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(tls_err)?;
        let mut p = CertificateParams::new(sans).map_err(tls_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, server_name(node));
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2200, 1, 1);
        let cert = p.signed_by(&key, &issuer).map_err(tls_err)?;
        Ok(ApiTls {
            ca_pem: ca_cert.pem(),
            ca: ca_cert.der().clone(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// rustls server configuration: TLS 1.3, no client certificate, the
    /// chain (this node's certificate, then the CA's), ALPN `http/1.1`.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone(), self.ca.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
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

    #[test]
    fn every_node_derives_the_same_api_ca_key() {
        let a = ApiTls::new(
            &[3u8; 32],
            NodeId(1),
            &["Web-1".into(), "bad name".into()],
            &[],
        )
        .unwrap();
        let b = ApiTls::new(&[3u8; 32], NodeId(2), &[], &["10.0.0.2".parse().unwrap()]).unwrap();
        let c = ApiTls::new(&[4u8; 32], NodeId(3), &[], &[]).unwrap();
        let (ka, _) = api_ca_key(&[3u8; 32]).unwrap();
        let (kb, _) = api_ca_key(&[3u8; 32]).unwrap();
        let (kc, _) = api_ca_key(&[4u8; 32]).unwrap();
        assert_eq!(ka.public_key_raw(), kb.public_key_raw());
        assert_ne!(ka.public_key_raw(), kc.public_key_raw());
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(a.cert, b.cert);
        a.server_config().unwrap();
        c.server_config().unwrap();
        assert!(dns_name("web-1.example") && !dns_name("bad name") && !dns_name("-x"));
    }
}
