//! TLS and WebSocket settings, the same for every runtime.

use std::io;
use std::sync::Arc;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tether_core::embed::TransportLimits;

/// A TLS configuration from a PEM certificate chain and a PEM private key.
///
/// # Errors
/// `InvalidInput` when either PEM cannot be read (no certificate, no key, bad base64), and
/// another error when rustls refuses the pair.
pub fn tls_from_pem(
    certificate_chain: &[u8],
    private_key: &[u8],
) -> io::Result<Arc<rustls::ServerConfig>> {
    let invalid = |e: rustls::pki_types::pem::Error| io::Error::new(io::ErrorKind::InvalidInput, e);
    let chain = CertificateDer::pem_slice_iter(certificate_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let key = PrivateKeyDer::from_pem_slice(private_key).map_err(invalid)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
    .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// TLS for clients trusting the bundled web PKI roots.
pub(crate) fn web_pki_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The WebSocket settings for frames of at most `max_frame_size` bytes (see
/// [`TransportLimits`]): one frame per message, no message larger than a frame, a small
/// read buffer and a bounded write buffer. Public so benchmarks can give a raw WebSocket
/// baseline the same settings.
pub fn websocket_config(max_frame_size: usize) -> WebSocketConfig {
    let limits = TransportLimits::for_frame_size(max_frame_size);
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(limits.write_buffer)
        .max_write_buffer_size(limits.max_write_buffer)
}
