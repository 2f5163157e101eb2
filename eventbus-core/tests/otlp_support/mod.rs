//! An OTLP/HTTP receiver for the `otlp*` tests: a small HTTP/1.1 server on std threads
//! (not on the tests' runtime, so that a flush blocking that runtime cannot starve it) that
//! answers every `POST` with an empty protobuf response and hands the requests over.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// One export the receiver got.
struct Export {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// An OTLP/HTTP receiver: answers every `POST` with an empty response (an empty
/// `Export…ServiceResponse`: full success) and hands the requests over.
pub struct Receiver {
    /// The base URL to export to.
    pub url: String,
    exports: mpsc::Receiver<Export>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("receiver address")
        );
        let (tx, exports) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || serve(stream, &tx));
            }
        });
        Receiver { url, exports }
    }

    /// The next export to `path` within 10 s, its body decoded (OTLP/HTTP with protobuf).
    pub fn next<M: prost::Message + Default>(&self, path: &str) -> M {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let export = self
                .exports
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no export to {path} within 10 s"));
            if export.path == path {
                assert_eq!(export.content_type, "application/x-protobuf");
                return M::decode(export.body.as_slice()).expect("a protobuf body");
            }
        }
    }
}

/// Serves one connection (HTTP/1.1, kept alive): each request's path, type and body sent.
fn serve(stream: TcpStream, tx: &mpsc::Sender<Export>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = tx.send(Export {
            path,
            content_type,
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The string value of attribute `key`.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}
