//! A [`ReadModelOp`] as the Redis commands that perform it: what the `PROJECT` script runs.

use eventbus_core::projection::{format_f64, ListEnd, ReadModelOp};

/// The Redis commands of `op`, as argument lists with the key second (`HSET key f v`). A
/// write with nothing to write (no fields, values or members) is no command at all; a kind
/// of write this version does not know is an error (why), never silently dropped.
pub(crate) fn commands(op: &ReadModelOp) -> Result<Vec<Vec<String>>, String> {
    Ok(match op {
        ReadModelOp::HashSet { key, fields } if !fields.is_empty() => {
            let pairs = fields.iter().flat_map(|(f, v)| [f.clone(), v.clone()]);
            vec![command("HSET", key, pairs)]
        }
        ReadModelOp::HashIncr { key, field, by } => {
            vec![command("HINCRBY", key, [field.clone(), by.to_string()])]
        }
        ReadModelOp::HashIncrFloat { key, field, by } => {
            vec![command(
                "HINCRBYFLOAT",
                key,
                [field.clone(), format_f64(*by)],
            )]
        }
        ReadModelOp::HashDel { key, fields } if !fields.is_empty() => {
            vec![command("HDEL", key, fields.iter().cloned())]
        }
        ReadModelOp::Delete { key } => vec![command("DEL", key, [])],
        ReadModelOp::ListPush {
            key,
            values,
            end,
            max_len,
        } if !values.is_empty() => {
            let push = match end {
                ListEnd::Front => "LPUSH",
                ListEnd::Back => "RPUSH",
            };
            let mut out = vec![command(push, key, values.iter().cloned())];
            if let Some(max) = max_len {
                // Keep the `max` values nearest the end pushed to.
                let (start, stop) = match end {
                    ListEnd::Front => (0, *max as i64 - 1),
                    ListEnd::Back => (-(*max as i64), -1),
                };
                out.push(command("LTRIM", key, [start.to_string(), stop.to_string()]));
            }
            out
        }
        ReadModelOp::ListRemove { key, value } => {
            vec![command("LREM", key, ["0".to_owned(), value.clone()])]
        }
        ReadModelOp::SetAdd { key, members } if !members.is_empty() => {
            vec![command("SADD", key, members.iter().cloned())]
        }
        ReadModelOp::SetRemove { key, members } if !members.is_empty() => {
            vec![command("SREM", key, members.iter().cloned())]
        }
        ReadModelOp::Incr { key, by } => vec![command("INCRBY", key, [by.to_string()])],
        // Empty writes (the arms above take the others).
        ReadModelOp::HashSet { .. }
        | ReadModelOp::HashDel { .. }
        | ReadModelOp::ListPush { .. }
        | ReadModelOp::SetAdd { .. }
        | ReadModelOp::SetRemove { .. } => Vec::new(),
        other => return Err(format!("no Redis encoding for {other:?}")),
    })
}

/// `name key args…`.
fn command(name: &str, key: &str, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut c = vec![name.to_owned(), key.to_owned()];
    c.extend(args);
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_pushes_trim_from_the_far_end() {
        let push = |end| ReadModelOp::ListPush {
            key: "l".into(),
            values: vec!["a".into()],
            end,
            max_len: Some(3),
        };
        assert_eq!(
            commands(&push(ListEnd::Front)).unwrap()[0],
            ["LPUSH", "l", "a"]
        );
        assert_eq!(
            commands(&push(ListEnd::Front)).unwrap()[1],
            ["LTRIM", "l", "0", "2"]
        );
        assert_eq!(
            commands(&push(ListEnd::Back)).unwrap()[1],
            ["LTRIM", "l", "-3", "-1"]
        );
    }

    #[test]
    fn empty_writes_are_no_commands() {
        let empty = ReadModelOp::HashSet {
            key: "h".into(),
            fields: vec![],
        };
        assert!(commands(&empty).unwrap().is_empty());
        let set = ReadModelOp::HashSet {
            key: "h".into(),
            fields: vec![("f".into(), "v".into()), ("g".into(), "w".into())],
        };
        assert_eq!(commands(&set).unwrap(), [["HSET", "h", "f", "v", "g", "w"]]);
        let incr = ReadModelOp::HashIncrFloat {
            key: "h".into(),
            field: "f".into(),
            by: 100.0,
        };
        assert_eq!(
            commands(&incr).unwrap(),
            [["HINCRBYFLOAT", "h", "f", "100.0"]]
        );
    }
}
