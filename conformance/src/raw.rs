//! A raw HTTP/1.1 request over a TcpStream, for paths that an HTTP client
//! would normalise before sending (e.g. `..` segments).

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Resp;

/// Sends `method path` exactly as given (no normalisation) with an empty body.
pub(crate) async fn request(base: &Url, method: &str, path: &str) -> Resp {
    let mut resp = Resp {
        method: format!("{method} (raw)"),
        target: path.to_string(),
        status: 0,
        headers: HeaderMap::new(),
        body: Vec::new(),
    };
    match exchange(base, method, path).await {
        Ok((status, headers, body)) => {
            resp.status = status;
            resp.headers = headers;
            resp.body = body;
        }
        Err(e) => resp.body = e.into_bytes(),
    }
    resp
}

async fn exchange(
    base: &Url,
    method: &str,
    path: &str,
) -> Result<(u16, HeaderMap, Vec<u8>), String> {
    let host = base.host_str().ok_or("base URL has no host")?;
    let port = base.port_or_known_default().ok_or("base URL has no port")?;
    let authority = match base.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let fut = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nUser-Agent: berth-conformance\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<Vec<u8>, String>(buf)
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(30), fut)
        .await
        .map_err(|_| "timed out".to_string())??;
    parse(&buf)
}

fn parse(buf: &[u8]) -> Result<(u16, HeaderMap, Vec<u8>), String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    let raw_body = &buf[end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .map(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
        .unwrap_or(false);
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Ok((status, headers, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..pos]);
        let size_str = size_str.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_str, 16) else {
            break;
        };
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
