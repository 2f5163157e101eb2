//! Scraping a `/metrics` endpoint, as Prometheus does, and reading its series.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One series of a scrape: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with its `_bucket`, `_sum`, `_count` suffix for a histogram's series).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// Whether it has every label of `labels` with that value.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// `GET /metrics` from `addr` (blocking, 5 s at most): the body; panics on anything but a
/// `200` in the text exposition format.
pub fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .expect("send the scrape");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("read the scrape of {addr}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// The series of a scrape (comments and blank lines skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse(line).unwrap_or_else(|| panic!("not a series: {line:?}")))
        .collect()
}

/// The series of `name` having `labels` in `text`.
pub fn find(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<Sample> {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name && s.has(labels))
        .collect()
}

/// The value of the one series of `name` having `labels`; `None` when there is none, a panic
/// when there are several.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = find(text, name, labels);
    assert!(found.len() <= 1, "several series match: {found:?}");
    found.first().map(|s| s.value)
}

/// Scrapes `addr` until `check` holds of the text, every 50 ms for at most `limit`; returns
/// that text, or panics with `what` and the last scrape.
pub fn scrape_until(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(addr);
        if check(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("{what}: not seen within {limit:?}; last scrape:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `name{k="v",…} value` (label values with `\"`, `\\` and `\n` escapes).
fn parse(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_parse_with_their_labels() {
        let text =
            "# TYPE m gauge\nm{a=\"x\",b=\"q\\\"uote\"} 20\nplain 1.5\nh_bucket{le=\"+Inf\"} 3\n";
        let all = samples(text);
        assert_eq!(all.len(), 3);
        assert_eq!(
            value(text, "m", &[("a", "x"), ("b", "q\"uote")]),
            Some(20.0)
        );
        assert_eq!(value(text, "plain", &[]), Some(1.5));
        assert_eq!(value(text, "h_bucket", &[("le", "+Inf")]), Some(3.0));
        assert_eq!(value(text, "m", &[("a", "y")]), None);
    }
}
