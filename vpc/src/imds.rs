//! An IMDSv2 client: node identity and the ENIs EC2 says are attached, read the way the AWS
//! VPC CNI reads them at start.
//!
//! IMDSv2 (EC2 User Guide, "Use the Instance Metadata Service to access instance metadata"):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` returns a session
//! token; every `GET /latest/meta-data/...` carries it in `X-aws-ec2-metadata-token`.
//!
//! A small hyper client rather than `aws_config::imds::Client`: that one refreshes its token
//! 120 s before expiry whatever the TTL (so short-TTL tests cannot show caching), consults
//! environment variables and `~/.aws/config` for its endpoint, and retries a 401 with the same
//! cached token. Here the endpoint is only what the caller gives, the token is renewed once
//! three quarters of its TTL have passed, and a 401 drops the token and asks for a new one.

use std::net::Ipv4Addr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Where IMDS answers on an EC2 instance.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The token request path.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The prefix of every metadata path.
pub const META_PREFIX: &str = "/latest/meta-data/";
/// Request header carrying the token TTL (PUT) and response header echoing it.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Request header carrying the token (GET).
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// IMDS accepts TTLs from 1 s to 6 h.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(21_600);

/// Largest answer read; IMDS answers are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;

/// What the node learns about itself from IMDS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    pub instance_id: String,
    pub instance_type: String,
    pub region: String,
    /// MAC of the primary ENI (`mac`).
    pub primary_mac: String,
    /// Attached ENIs, ordered by device number.
    pub enis: Vec<ImdsEni>,
}

impl InstanceMetadata {
    /// The ENI at device number 0.
    pub fn primary_eni(&self) -> Option<&ImdsEni> {
        self.enis.iter().find(|eni| eni.mac == self.primary_mac)
    }
}

/// One ENI under `network/interfaces/macs/<mac>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImdsEni {
    pub mac: String,
    pub device_number: u32,
    pub interface_id: String,
    pub subnet_id: String,
    pub subnet_cidr: Ipv4Net,
    pub security_group_ids: Vec<String>,
    /// Primary address first.
    pub local_ipv4s: Vec<Ipv4Addr>,
    /// Delegated /28 prefixes; IMDS answers 404 when there are none.
    pub ipv4_prefixes: Vec<Ipv4Net>,
    pub vpc_cidrs: Vec<Ipv4Net>,
}

/// A failed IMDS read, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS endpoint {endpoint:?} is not an http://host[:port] URL")]
    BadEndpoint { endpoint: String },
    #[error("IMDS {path}: no answer from {endpoint} within {timeout:?}")]
    Timeout {
        path: String,
        endpoint: String,
        timeout: Duration,
    },
    #[error("IMDS {path}: request to {endpoint} failed: {reason}")]
    Transport {
        path: String,
        endpoint: String,
        reason: String,
    },
    #[error("IMDS {path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("IMDS {path}: not found (HTTP 404)")]
    NotFound { path: String },
    #[error("IMDS {path}: {value:?} is not {expected}")]
    Parse {
        path: String,
        value: String,
        expected: &'static str,
    },
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ImdsConfig {
    /// `http://host[:port]`; [`DEFAULT_ENDPOINT`] on EC2, the test server's elsewhere.
    pub endpoint: String,
    /// Token lifetime asked for, at most [`MAX_TOKEN_TTL`].
    pub token_ttl: Duration,
    /// Per request, connection included.
    pub timeout: Duration,
    /// Tries per read for transient failures (connection, timeout, 5xx, 429, one 401).
    pub attempts: u32,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            token_ttl: MAX_TOKEN_TTL,
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

#[derive(Debug)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// The IMDSv2 client.
#[derive(Debug)]
pub struct ImdsClient {
    config: ImdsConfig,
    host: String,
    port: u16,
    /// `host[:port]` as given, for the Host header and error messages.
    authority: String,
    token: Mutex<Option<Token>>,
}

impl ImdsClient {
    pub fn new(config: ImdsConfig) -> Result<Self, ImdsError> {
        let bad = || ImdsError::BadEndpoint {
            endpoint: config.endpoint.clone(),
        };
        let uri: Uri = config.endpoint.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri.authority().map(|a| a.to_string()).ok_or_else(bad)?;
        Ok(ImdsClient {
            config,
            host,
            port,
            authority,
            token: Mutex::new(None),
        })
    }

    /// The metadata value at `path` (relative to `/latest/meta-data/`).
    pub async fn get(&self, path: &str) -> Result<String, ImdsError> {
        self.get_optional(path)
            .await?
            .ok_or_else(|| ImdsError::NotFound {
                path: full_path(path),
            })
    }

    /// Like [`ImdsClient::get`], but a 404 is `None`: IMDS hides keys with no value.
    pub async fn get_optional(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let full = full_path(path);
        let mut last = None;
        for attempt in 0..self.config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            let token = self.token().await?;
            let error = match self.send(Method::GET, &full, (TOKEN_HEADER, &token)).await {
                Ok((StatusCode::OK, _, body)) => return Ok(Some(body)),
                Ok((StatusCode::NOT_FOUND, _, _)) => return Ok(None),
                Ok((StatusCode::UNAUTHORIZED, _, _)) => {
                    // Expired or revoked (IMDS restarted): a new token, then once more.
                    *self.token.lock().await = None;
                    ImdsError::Status {
                        path: full.clone(),
                        status: 401,
                    }
                }
                Ok((status, _, _)) if status.is_server_error() || status.as_u16() == 429 => {
                    ImdsError::Status {
                        path: full.clone(),
                        status: status.as_u16(),
                    }
                }
                Ok((status, _, _)) => {
                    return Err(ImdsError::Status {
                        path: full,
                        status: status.as_u16(),
                    })
                }
                Err(error) => error,
            };
            last = Some(error);
        }
        Err(last.unwrap_or(ImdsError::Status {
            path: full,
            status: 0,
        }))
    }

    /// A newline-separated list; directory entries lose their trailing `/`.
    pub async fn get_list(&self, path: &str) -> Result<Vec<String>, ImdsError> {
        Ok(split_list(&self.get(path).await?))
    }

    /// The MACs of the attached ENIs.
    pub async fn macs(&self) -> Result<Vec<String>, ImdsError> {
        self.get_list("network/interfaces/macs/").await
    }

    /// Everything under `network/interfaces/macs/<mac>/` the ENI manager uses.
    pub async fn eni(&self, mac: &str) -> Result<ImdsEni, ImdsError> {
        let base = format!("network/interfaces/macs/{mac}/");
        let key = |name: &str| format!("{base}{name}");
        let device_number = parse(
            &key("device-number"),
            self.get(&key("device-number")).await?,
        )?;
        let local_ipv4s = parse_all(
            &key("local-ipv4s"),
            self.get_list(&key("local-ipv4s")).await?,
        )?;
        let prefixes = match self.get_optional(&key("ipv4-prefix")).await? {
            Some(text) => parse_all(&key("ipv4-prefix"), split_list(&text))?,
            None => vec![],
        };
        let vpc_key = key("vpc-ipv4-cidr-blocks");
        Ok(ImdsEni {
            mac: mac.to_owned(),
            device_number,
            interface_id: self.get(&key("interface-id")).await?.trim().to_owned(),
            subnet_id: self.get(&key("subnet-id")).await?.trim().to_owned(),
            subnet_cidr: parse(
                &key("subnet-ipv4-cidr-block"),
                self.get(&key("subnet-ipv4-cidr-block")).await?,
            )?,
            security_group_ids: self.get_list(&key("security-group-ids")).await?,
            local_ipv4s,
            ipv4_prefixes: prefixes,
            vpc_cidrs: parse_all(&vpc_key, self.get_list(&vpc_key).await?)?,
        })
    }

    /// Node identity and every attached ENI, ordered by device number.
    pub async fn instance_metadata(&self) -> Result<InstanceMetadata, ImdsError> {
        let mut enis = Vec::new();
        for mac in self.macs().await? {
            enis.push(self.eni(&mac).await?);
        }
        enis.sort_by_key(|eni| eni.device_number);
        Ok(InstanceMetadata {
            instance_id: self.get("instance-id").await?.trim().to_owned(),
            instance_type: self.get("instance-type").await?.trim().to_owned(),
            region: self.get("placement/region").await?.trim().to_owned(),
            primary_mac: self.get("mac").await?.trim().to_owned(),
            enis,
        })
    }

    /// The cached token, or a new one once three quarters of its TTL have passed.
    async fn token(&self) -> Result<String, ImdsError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.renew_at {
                return Ok(token.value.clone());
            }
        }
        let ttl = self
            .config
            .token_ttl
            .clamp(Duration::from_secs(1), MAX_TOKEN_TTL);
        let asked = ttl.as_secs().to_string();
        let mut last = None;
        for attempt in 0..self.config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            let error = match self
                .send(Method::PUT, TOKEN_PATH, (TTL_HEADER, &asked))
                .await
            {
                Ok((StatusCode::OK, granted, value)) => {
                    // The server may grant less than asked; trust its number when it gives one.
                    let granted = granted.map_or(ttl, Duration::from_secs);
                    *cached = Some(Token {
                        value: value.clone(),
                        renew_at: Instant::now() + granted * 3 / 4,
                    });
                    return Ok(value);
                }
                Ok((status, _, _)) if status.is_server_error() || status.as_u16() == 429 => {
                    ImdsError::Status {
                        path: TOKEN_PATH.to_owned(),
                        status: status.as_u16(),
                    }
                }
                Ok((status, _, _)) => {
                    return Err(ImdsError::Status {
                        path: TOKEN_PATH.to_owned(),
                        status: status.as_u16(),
                    })
                }
                Err(error) => error,
            };
            last = Some(error);
        }
        Err(last.unwrap_or(ImdsError::Status {
            path: TOKEN_PATH.to_owned(),
            status: 0,
        }))
    }

    /// One request on a fresh connection: status, the TTL header if any, and the body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        header: (&str, &str),
    ) -> Result<(StatusCode, Option<u64>, String), ImdsError> {
        let endpoint = self.authority.clone();
        let transport = |reason: String| ImdsError::Transport {
            path: path.to_owned(),
            endpoint: endpoint.clone(),
            reason,
        };
        let exchange = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| transport(e.to_string()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| transport(e.to_string()))?;
            let driver = tokio::spawn(connection);
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, endpoint.as_str())
                .header(header.0, header.1)
                .body(Empty::<Bytes>::new())
                .map_err(|e| transport(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = response.status();
            let ttl = response
                .headers()
                .get(TTL_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            drop(sender);
            driver.abort();
            let body = String::from_utf8(body.to_vec())
                .map_err(|_| transport("answer is not UTF-8".to_owned()))?;
            Ok((status, ttl, body))
        };
        tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| ImdsError::Timeout {
                path: path.to_owned(),
                endpoint: endpoint.clone(),
                timeout: self.config.timeout,
            })?
    }
}

fn full_path(path: &str) -> String {
    format!("{META_PREFIX}{}", path.trim_start_matches('/'))
}

fn split_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim().trim_end_matches('/').to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

fn parse<T: std::str::FromStr>(path: &str, text: String) -> Result<T, ImdsError> {
    let expected = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("valid");
    text.trim().parse().map_err(|_| ImdsError::Parse {
        path: full_path(path),
        value: text.clone(),
        expected,
    })
}

fn parse_all<T: std::str::FromStr>(path: &str, items: Vec<String>) -> Result<Vec<T>, ImdsError> {
    items.into_iter().map(|item| parse(path, item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http() {
        let with = |endpoint: &str| {
            ImdsClient::new(ImdsConfig {
                endpoint: endpoint.to_owned(),
                ..ImdsConfig::default()
            })
        };
        let client = with("http://127.0.0.1:8080").expect("loopback with port");
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 8080));
        let default = with(DEFAULT_ENDPOINT).expect("the default");
        assert_eq!(
            (default.host.as_str(), default.port),
            ("169.254.169.254", 80)
        );
        for bad in [
            "https://169.254.169.254",
            "169.254.169.254",
            "http://h/latest/",
        ] {
            let err = with(bad).unwrap_err();
            assert!(matches!(err, ImdsError::BadEndpoint { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn lists_drop_directory_slashes_and_blank_lines() {
        assert_eq!(split_list("0e:aa/\n0e:bb/\n\n"), vec!["0e:aa", "0e:bb"]);
    }

    #[test]
    fn parse_errors_name_the_path_and_value() {
        let err =
            parse::<u32>("network/interfaces/macs/x/device-number", "one".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "IMDS /latest/meta-data/network/interfaces/macs/x/device-number: \"one\" is not u32"
        );
    }
}
