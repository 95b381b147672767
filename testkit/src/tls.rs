//! A throw-away PKI for TLS tests: a CA, a server certificate, a client certificate signed by
//! the CA, and a client certificate from a foreign CA that etcd must refuse.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a generated PKI, all inside [`TlsFiles::dir`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The directory holding every file below (owned by the [`crate::Etcd`] fixture).
    pub dir: PathBuf,
    /// The CA certificate etcd trusts for client certificates, and clients trust for etcd.
    pub ca: PathBuf,
    /// A client certificate signed by [`TlsFiles::ca`].
    pub client_cert: PathBuf,
    /// The key of [`TlsFiles::client_cert`] (PKCS#8 PEM).
    pub client_key: PathBuf,
    /// A client certificate signed by an unrelated CA: etcd must refuse it.
    pub foreign_client_cert: PathBuf,
    /// The key of [`TlsFiles::foreign_client_cert`].
    pub foreign_client_key: PathBuf,
    /// etcd's serving certificate, valid for `127.0.0.1`, `localhost` and the listen address.
    pub server_cert: PathBuf,
    /// The key of [`TlsFiles::server_cert`].
    pub server_key: PathBuf,
}

/// A CA able to sign leaf certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { issuer: Issuer::new(params, key), pem: cert.pem() }
    }

    /// Signs a leaf for `sans` with the given extended key usages; returns (cert, key) PEM.
    fn leaf(
        &self,
        cn: &str,
        sans: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> (String, String) {
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = usages;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

impl TlsFiles {
    /// Generates the PKI into `dir`, with the server certificate also valid for `listen_ip`.
    pub(crate) fn generate(dir: &Path, listen_ip: IpAddr) -> Self {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ca = Ca::new("tabby test CA");
        let foreign = Ca::new("foreign test CA");

        let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        if listen_ip.to_string() != "127.0.0.1" {
            sans.push(listen_ip.to_string());
        }
        // etcd 3.4's gRPC gateway dials its own client port with the server certificate, so
        // with client-cert-auth on the server certificate must be usable as a client too.
        let (server_cert, server_key) = ca.leaf(
            "etcd",
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        let client_usage = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (client_cert, client_key) =
            ca.leaf("tabby", vec!["tabby".into()], client_usage.clone());
        let (foreign_cert, foreign_key) =
            foreign.leaf("intruder", vec!["intruder".into()], client_usage);

        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        TlsFiles {
            dir: dir.to_path_buf(),
            ca: write("ca.pem", &ca.pem),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            foreign_client_cert: write("foreign-client.pem", &foreign_cert),
            foreign_client_key: write("foreign-client-key.pem", &foreign_key),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
        }
    }
}
