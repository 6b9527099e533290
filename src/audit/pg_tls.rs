//! Encrypted connections to the department's PostgreSQL server: TLS through rustls, chosen and
//! checked as libpq (`psql`) does, from the store's address.
//!
//! - `sslmode=disable`: no TLS.
//! - `sslmode=allow`, `prefer` (the default) or `require`: TLS when the server offers it
//!   (`require`: or no connection). The traffic is encrypted; the server's certificate is not
//!   checked unless a CA certificate is given (`sslrootcert=FILE`), as with libpq.
//! - `sslmode=verify-ca`: TLS, and the server's certificate must be signed by the CA in
//!   `sslrootcert` (default `~/.postgresql/root.crt`).
//! - `sslmode=verify-full`: as `verify-ca`, and the certificate must name the host connected to:
//!   what a department should use.
//!
//! Both go in the address: `postgres://dr_lee@db.example/cxr_triage?sslmode=verify-full&sslrootcert=/etc/ssl/hospital-ca.pem`,
//! or `host=db.example user=dr_lee dbname=cxr_triage sslmode=verify-full sslrootcert=…`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::AuditError;

/// How the connection is encrypted and the server's certificate checked (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (libpq tries without first; here as `Prefer`).
    Allow,
    /// TLS if the server offers it.
    Prefer,
    /// TLS, or no connection.
    Require,
    /// TLS, with a certificate signed by the given CA.
    VerifyCa,
    /// TLS, with a certificate signed by the given CA that names the host.
    VerifyFull,
}

/// A server's address split into what the postgres crate reads and the TLS settings it leaves
/// to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// The address without `sslmode` and `sslrootcert`.
    pub rest: String,
    /// `sslmode` (default [`TlsMode::Prefer`]).
    pub mode: TlsMode,
    /// `sslrootcert`: the CA certificates (PEM) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
}

impl ServerAddress {
    /// Reads `sslmode` and `sslrootcert` out of a URL (`postgres://…?sslmode=…`) or a
    /// `key=value` address.
    pub fn parse(address: &str) -> Result<Self, AuditError> {
        let mut mode = None;
        let mut root_cert = None;
        let mut take = |key: &str, value: &str| -> Result<bool, AuditError> {
            match key {
                "sslmode" => {
                    mode = Some(match value {
                        "disable" => TlsMode::Disable,
                        "allow" => TlsMode::Allow,
                        "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(AuditError::Server(format!(
                                "sslmode={other} in the store's address is not one of disable, \
                                 allow, prefer, require, verify-ca, verify-full"
                            )));
                        }
                    });
                    Ok(true)
                }
                "sslrootcert" => {
                    root_cert = Some(PathBuf::from(value));
                    Ok(true)
                }
                _ => Ok(false),
            }
        };
        let rest = if address.contains("://") {
            match address.split_once('?') {
                None => address.to_owned(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        if !take(key, &percent_decode(value))? {
                            kept.push(pair);
                        }
                    }
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for word in address.split_whitespace() {
                let (key, value) = word.split_once('=').unwrap_or((word, ""));
                if !take(key.trim(), value.trim_matches('\''))? {
                    kept.push(word);
                }
            }
            kept.join(" ")
        };
        Ok(Self {
            rest,
            mode: mode.unwrap_or(TlsMode::Prefer),
            root_cert,
        })
    }

    /// The address as the postgres crate reads it (never shown: it may hold a password).
    pub fn config(&self) -> Result<Config, AuditError> {
        self.rest.parse().map_err(|e: postgres::Error| {
            AuditError::Server(format!("the store's address cannot be read: {e}"))
        })
    }

    /// Connects as the address says, encrypted as its `sslmode` says.
    pub fn connect(&self) -> Result<Client, AuditError> {
        let mut config = self.config()?;
        let (ssl_mode, root_cert) = match self.mode {
            TlsMode::Disable => {
                config.ssl_mode(SslMode::Disable);
                return config.connect(NoTls).map_err(connect_error);
            }
            TlsMode::Allow | TlsMode::Prefer => (SslMode::Prefer, self.root_cert.clone()),
            TlsMode::Require => (SslMode::Require, self.root_cert.clone()),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let file = self
                    .root_cert
                    .clone()
                    .or_else(default_root_cert)
                    .ok_or_else(|| {
                        AuditError::Server(
                        "sslmode=verify-ca or verify-full needs the CA certificate that signed \
                         the server's: add sslrootcert=FILE to the store's address (or put it \
                         in ~/.postgresql/root.crt)"
                            .to_owned(),
                    )
                    })?;
                (SslMode::Require, Some(file))
            }
        };
        config.ssl_mode(ssl_mode);
        // ring builds with the C compiler alone; rustls deprecates its provider for lacking
        // post-quantum key exchange (aws-lc-rs has it, at the cost of a much larger C build).
        // TLS 1.3 with X25519 still protects the traffic against today's attackers.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = root_cert
            .map(|file| {
                let roots = Arc::new(read_roots(&file)?);
                WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .build()
                    .map_err(|e| AuditError::Server(format!("the CA certificate: {e}")))
            })
            .transpose()?;
        let verifier = Verifier {
            chain,
            check_name: self.mode == TlsMode::VerifyFull,
            provider: Arc::clone(&provider),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AuditError::Server(format!("TLS cannot be set up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config
            .connect(MakeRustlsConnect::new(tls))
            .map_err(connect_error)
    }
}

/// A failed connection: a certificate the TLS check refused is the address's or the server's
/// configuration to fix ([`AuditError::Server`]), not a server that is away for now.
fn connect_error(e: postgres::Error) -> AuditError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return AuditError::Server(format!("TLS with the server failed: {tls}"));
        }
        source = s.source();
    }
    e.into()
}

/// libpq's default CA file, `~/.postgresql/root.crt`, where it exists.
fn default_root_cert() -> Option<PathBuf> {
    let file = directories::BaseDirs::new()?
        .home_dir()
        .join(".postgresql/root.crt");
    file.is_file().then_some(file)
}

/// The CA certificates in a PEM file.
fn read_roots(file: &Path) -> Result<RootCertStore, AuditError> {
    let unreadable = |why: String| {
        AuditError::Server(format!(
            "the CA certificate file {} (sslrootcert) cannot be read: {why}",
            file.display()
        ))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file).map_err(|e| unreadable(e.to_string()))? {
        let cert = cert.map_err(|e| unreadable(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| unreadable(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(unreadable("it holds no certificate".to_owned()));
    }
    Ok(roots)
}

/// `%XX` escapes of a URL's query value decoded (a path in `sslrootcert`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the server's certificate as the `sslmode` says.
#[derive(Debug)]
struct Verifier {
    /// The check against the CA; `None`: any certificate (encrypted, the server not
    /// authenticated: `prefer` or `require` without `sslrootcert`, as libpq).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must name the host (`verify-full`).
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_read_out_of_both_address_forms() {
        let a = ServerAddress::parse(
            "postgres://dr_lee@db.example:5433/cxr_triage?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca%20one.pem",
        )
        .unwrap();
        assert_eq!(a.mode, TlsMode::VerifyFull);
        assert_eq!(a.root_cert, Some(PathBuf::from("/etc/ca one.pem")));
        assert_eq!(
            a.rest,
            "postgres://dr_lee@db.example:5433/cxr_triage?application_name=x"
        );
        assert!(a.config().is_ok());

        let b = ServerAddress::parse("postgres://db.example/cxr_triage").unwrap();
        assert_eq!(b.mode, TlsMode::Prefer);
        assert_eq!(b.root_cert, None);
        assert_eq!(b.rest, "postgres://db.example/cxr_triage");

        let c = ServerAddress::parse(
            "host=db.example user=dr_lee sslmode=require sslrootcert=/etc/ca.pem dbname=cxr",
        )
        .unwrap();
        assert_eq!(c.mode, TlsMode::Require);
        assert_eq!(c.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.rest, "host=db.example user=dr_lee dbname=cxr");

        let only_tls = ServerAddress::parse("postgres://db.example/x?sslmode=disable").unwrap();
        assert_eq!(only_tls.rest, "postgres://db.example/x");
        assert_eq!(only_tls.mode, TlsMode::Disable);

        let err = ServerAddress::parse("postgres://db.example/x?sslmode=maybe").unwrap_err();
        assert!(err.to_string().contains("sslmode=maybe"), "{err}");
    }

    #[test]
    fn verify_full_without_a_ca_says_what_is_missing() {
        let a = ServerAddress {
            rest: "postgres://127.0.0.1:1/x".to_owned(),
            mode: TlsMode::VerifyFull,
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        let Err(err) = a.connect() else {
            panic!("connected without the CA file");
        };
        let err = err.to_string();
        assert!(
            err.contains("sslrootcert") && err.contains("cannot be read"),
            "{err}"
        );
    }
}
