//! TLS on the client port with rustls' *unbuffered* connection API: the
//! connection object holds only the TLS state; ciphertext that does not yet
//! form a whole record is the only buffer kept between reads (none while
//! idle), and plaintext and ciphertext go through the worker's shared buffers.
//! This is what keeps an idle TLS receive connection small.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};

/// Largest ciphertext kept while waiting for the rest of a TLS record (a record is at most ~16.7 KiB).
const MAX_PENDING_TLS: usize = 32 * 1024;

/// Why TLS failed on a connection (the client's fault, or a broken handshake).
#[derive(Debug)]
pub enum TlsError {
    /// rustls rejected what the client sent.
    Protocol(rustls::Error),
    /// More than a record's worth of ciphertext without a complete record.
    RecordTooLarge,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Protocol(e) => write!(f, "tls: {e}"),
            TlsError::RecordTooLarge => f.write_str("tls: oversized record"),
        }
    }
}

/// What feeding ciphertext produced.
#[derive(Debug, Default)]
pub struct Progress {
    /// The handshake is complete.
    pub established: bool,
    /// The peer sent close_notify (or the connection is closed).
    pub closed: bool,
}

/// One TLS connection.
pub struct TlsConn {
    conn: UnbufferedServerConnection,
    /// Ciphertext received but not yet a complete record (empty, unallocated, while idle).
    incoming: Vec<u8>,
    established: bool,
}

impl TlsConn {
    /// A server-side connection with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<TlsConn, rustls::Error> {
        Ok(TlsConn {
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            established: false,
        })
    }

    /// True once the handshake completed.
    pub fn established(&self) -> bool {
        self.established
    }

    /// Processes received ciphertext `input`: appends decrypted application
    /// data to `plain` and handshake records to send to `tls_out`.
    pub fn feed(
        &mut self,
        input: &[u8],
        plain: &mut Vec<u8>,
        tls_out: &mut Vec<u8>,
    ) -> Result<Progress, TlsError> {
        self.incoming.extend_from_slice(input);
        let p = self.pump(plain, tls_out, None)?;
        if self.incoming.len() > MAX_PENDING_TLS {
            return Err(TlsError::RecordTooLarge);
        }
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        Ok(p)
    }

    /// Encrypts application data `data` into `tls_out`. Records that arrive
    /// meanwhile are decrypted into `plain`. Fails if the handshake is not done.
    pub fn encrypt(
        &mut self,
        data: &[u8],
        plain: &mut Vec<u8>,
        tls_out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        self.pump(plain, tls_out, Some(data)).map(|_| ())
    }

    /// Drives the state machine until it needs more input (or, with `send`,
    /// until `send` was encrypted).
    fn pump(
        &mut self,
        plain: &mut Vec<u8>,
        tls_out: &mut Vec<u8>,
        mut send: Option<&[u8]>,
    ) -> Result<Progress, TlsError> {
        let mut progress = Progress::default();
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let state = status.state.map_err(TlsError::Protocol)?;
            let mut stop = false;
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        let rec = rec.map_err(TlsError::Protocol)?;
                        plain.extend_from_slice(rec.payload);
                    }
                }
                ConnectionState::ReadEarlyData(mut r) => {
                    // We do not enable 0-RTT; drain defensively.
                    while let Some(rec) = r.next_record() {
                        let _ = rec.map_err(TlsError::Protocol)?;
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let start = tls_out.len();
                    tls_out.resize(start + 4096, 0);
                    let written = match e.encode(&mut tls_out[start..]) {
                        Ok(n) => Some(n),
                        Err(EncodeError::InsufficientSize(s)) => {
                            tls_out.resize(start + s.required_size, 0);
                            e.encode(&mut tls_out[start..]).ok()
                        }
                        Err(_) => None,
                    };
                    tls_out.truncate(start + written.unwrap_or(0));
                }
                // The caller writes `tls_out` to the socket in order, after this call.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => stop = true,
                ConnectionState::WriteTraffic(mut w) => {
                    self.established = true;
                    progress.established = true;
                    if let Some(data) = send.take() {
                        encrypt_into(&mut w, data, tls_out)?;
                    }
                    stop = true;
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    progress.closed = true;
                    stop = true;
                }
                _ => stop = true,
            }
            if discard > 0 {
                self.incoming.drain(..discard.min(self.incoming.len()));
            }
            if stop {
                break;
            }
        }
        progress.established = self.established;
        if send.is_some() {
            return Err(TlsError::Protocol(rustls::Error::General(
                "write before the TLS handshake completed".into(),
            )));
        }
        Ok(progress)
    }
}

fn encrypt_into(
    w: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TlsError> {
    // Each record carries at most 16 KiB plus ~40 bytes of overhead.
    let start = out.len();
    let guess = data.len() + (data.len() / 16384 + 1) * 64;
    out.resize(start + guess, 0);
    match w.encrypt(data, &mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(EncryptError::InsufficientSize(s)) => {
            out.resize(start + s.required_size, 0);
            match w.encrypt(data, &mut out[start..]) {
                Ok(n) => {
                    out.truncate(start + n);
                    Ok(())
                }
                Err(e) => {
                    out.truncate(start);
                    Err(TlsError::Protocol(rustls::Error::General(format!(
                        "encrypt: {e}"
                    ))))
                }
            }
        }
        Err(e) => {
            out.truncate(start);
            Err(TlsError::Protocol(rustls::Error::General(format!(
                "encrypt: {e}"
            ))))
        }
    }
}

/// The certificate and key files, and the configuration made from them
/// (swapped on reload without touching open connections).
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Arc<rustls::ServerConfig>>,
}

impl TlsFiles {
    /// Loads `cert` (PEM chain) and `key` (PEM private key).
    pub fn load(cert: &Path, key: &Path) -> io::Result<TlsFiles> {
        let cfg = build_config(cert, key)?;
        Ok(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(cfg),
        })
    }

    /// The configuration for new connections.
    pub fn config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.lock().ok().map(|c| c.clone())
    }

    /// Reads the files again; on error keeps the old configuration and says why.
    pub fn reload(&self) -> io::Result<()> {
        let cfg = build_config(&self.cert, &self.key)?;
        if let Ok(mut c) = self.current.lock() {
            *c = cfg;
        }
        Ok(())
    }
}

/// A server configuration: TLS 1.2 and 1.3 (rustls offers nothing older), ALPN http/1.1.
pub fn build_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} {}: {e}", p.display()),
        )
    };
    let cert_pem = std::fs::read(cert).map_err(|e| bad("reading certificate", cert, &e))?;
    let key_pem = std::fs::read(key).map_err(|e| bad("reading key", key, &e))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| bad("parsing certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("parsing certificate", cert, &"no CERTIFICATE block"));
    }
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| bad("parsing key", key, &e))?
        .ok_or_else(|| bad("parsing key", key, &"no PRIVATE KEY block"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad("configuring TLS for", cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad("certificate and key do not fit", cert, &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session tickets and no resumption cache: nothing per client kept beyond its connection.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_state_size() {
        let n = std::mem::size_of::<rustls::server::UnbufferedServerConnection>();
        println!("UnbufferedServerConnection: {n} bytes inline");
        assert!(n < 4096);
    }
}
