//! A small HTTPS client for the end-to-end tier: trusts exactly the CA file it is given (as a
//! tablet with the clinic CA installed), sends one HTTP/1.1 request per connection and
//! returns the status, headers and body, or the TLS error that stopped it.
//!
//! Not reqwest: the workspace's reqwest is built without TLS, and turning its rustls on would
//! make every other test install a crypto provider first.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The application protocol the server chose.
    pub alpn: Option<Vec<u8>>,
}

impl Reply {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// A client for one server, trusting one CA.
#[derive(Clone)]
pub struct Https {
    connector: TlsConnector,
    addr: SocketAddr,
    server_name: ServerName<'static>,
}

impl Https {
    /// A client for `url` (`https://ADDRESS:PORT`) trusting only the CA in `ca_pem`; the
    /// name it checks the certificate against is the URL's address.
    pub fn trusting(ca_pem: &Path, url: &str) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
            roots.add(cert.expect("CA certificate")).expect("CA root");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let addr: SocketAddr = url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("{url} is not an https:// URL"))
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        Https {
            connector: TlsConnector::from(Arc::new(config)),
            addr,
            server_name: ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// The same client, checking the certificate against `name` (sent as SNI) instead, as a
    /// tablet does that reaches the appliance by name.
    pub fn named(mut self, name: &str) -> Https {
        self.server_name = ServerName::try_from(name.to_owned()).expect("server name");
        self
    }

    /// `GET path`; panics on a connection or TLS error.
    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// One request on a fresh connection. `Err` holds the connection's or handshake's error
    /// (for a TLS refusal, a `rustls::Error` inside the `io::Error`).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, std::io::Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let host = match &self.server_name {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            _ => self.addr.to_string(),
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(std::io::Error::other)?;
        let res = sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            alpn,
        })
    }
}

/// The rustls error inside a connection error, if TLS is what refused it.
pub fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
