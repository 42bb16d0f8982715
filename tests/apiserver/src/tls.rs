//! TLS with a test CA: a CA and a server certificate for `localhost` and the listen IP
//! (rcgen), kept in the state directory so a restarted server presents the same certificate to
//! clients holding the CA; a TLS listener for axum.

use std::{io, net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

/// Loads `dir/server.{crt,key}` (made with `dir/ca.crt`), creating all three when absent.
pub fn server_config(dir: &Path, ip: std::net::IpAddr) -> anyhow::Result<rustls::ServerConfig> {
    let (cert_path, key_path, ca_path) = (dir.join("server.crt"), dir.join("server.key"), dir.join("ca.crt"));
    if !cert_path.exists() || !key_path.exists() || !ca_path.exists() {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "observer test CA");
        let ca = ca_params.self_signed(&ca_key).context("CA certificate")?;
        let key = KeyPair::generate().context("server key")?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), ip.to_string()]).context("server params")?;
        params.distinguished_name.push(DnType::CommonName, "observer-test-apiserver");
        let cert = params.signed_by(&key, &ca, &ca_key).context("server certificate")?;
        std::fs::write(&ca_path, ca.pem()).with_context(|| format!("writing {}", ca_path.display()))?;
        std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
        std::fs::write(&key_path, key.serialize_pem()).with_context(|| format!("writing {}", key_path.display()))?;
    }
    let certs = vec![CertificateDer::from_pem_file(&cert_path).context("reading server.crt")?];
    let key = PrivateKeyDer::from_pem_file(&key_path).context("reading server.key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TCP connections and completes their TLS handshake.
pub struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, addr),
                Err(err) => tracing::debug!(error = %err, %addr, "TLS handshake failed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
