//! A calculator over HTTP, the service of the README walkthrough:
//! `GET /add?a=1&b=2` answers `3`; `sub`, `mul` and `div` work alike, and
//! `GET /` names the version. Listens on every address, port `$PORT`
//! (8080 when unset). Only the standard library, so it links statically
//! and runs in an empty image.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() {
    let port = match std::env::var("PORT") {
        Ok(text) => text.parse().unwrap_or_else(|_| {
            eprintln!("calculator: PORT={text:?} is not a port number");
            std::process::exit(2)
        }),
        Err(_) => 8080,
    };
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap_or_else(|e| {
        eprintln!("calculator: cannot listen on port {port}: {e}");
        std::process::exit(1)
    });
    eprintln!("calculator {VERSION} listening on port {port}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = serve(&stream) {
                        eprintln!("calculator: {e}");
                    }
                });
            }
            Err(e) => eprintln!("calculator: accepting a connection: {e}"),
        }
    }
}

/// Answers one request and closes the connection.
fn serve(stream: &TcpStream) -> std::io::Result<()> {
    // A client that never finishes its request must not hold a thread.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Closing with request bytes unread would reset the connection before
    // the client reads the answer, so the headers are read too.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    let (status, body) = answer(&request_line);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The status line's code and reason, and the body, for a request line
/// such as `GET /add?a=1&b=2 HTTP/1.1`.
fn answer(request_line: &str) -> (&'static str, String) {
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return ("400 Bad Request", "not an HTTP request\n".into());
    };
    if method != "GET" {
        return ("405 Method Not Allowed", "only GET is served\n".into());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let operation: fn(f64, f64) -> f64 = match path {
        "/" => return ("200 OK", format!("calculator {VERSION}\n")),
        "/add" => |a, b| a + b,
        "/sub" => |a, b| a - b,
        "/mul" => |a, b| a * b,
        "/div" => |a, b| a / b,
        _ => {
            return (
                "404 Not Found",
                "try /add?a=1&b=2 (or sub, mul, div)\n".into(),
            );
        }
    };
    let number = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|n| n.is_finite())
    };
    let (Some(a), Some(b)) = (number("a"), number("b")) else {
        return (
            "400 Bad Request",
            "a and b must be numbers: ?a=1&b=2\n".into(),
        );
    };
    // Division by zero and overflow have no number to answer with.
    match operation(a, b) {
        result if result.is_finite() => ("200 OK", format!("{result}\n")),
        _ => ("422 Unprocessable Entity", "no finite result\n".into()),
    }
}
