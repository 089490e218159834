//! Small readers for raw Redis replies (script results, stream replies), turning shape
//! mismatches into [`QueueError::UnexpectedReply`] instead of panics.

use deadpool_redis::redis::Value;

use crate::error::QueueError;

pub(crate) type Ctx = &'static str;

/// The fields of a stream entry, in order.
pub(crate) type Fields = Vec<(String, String)>;

pub(crate) fn array(ctx: Ctx, v: &Value) -> Result<&[Value], QueueError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(QueueError::unexpected(
            ctx,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// An array, with nil read as empty (Redis answers nil for "nothing" in several places).
pub(crate) fn array_or_nil(ctx: Ctx, v: &Value) -> Result<&[Value], QueueError> {
    match v {
        Value::Nil => Ok(&[]),
        other => array(ctx, other),
    }
}

pub(crate) fn opt_string(ctx: Ctx, v: &Value) -> Result<Option<String>, QueueError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| QueueError::unexpected(ctx, "string is not UTF-8")),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::VerbatimString { text, .. } => Ok(Some(text.clone())),
        Value::Okay => Ok(Some("OK".to_owned())),
        Value::Int(i) => Ok(Some(i.to_string())),
        other => Err(QueueError::unexpected(
            ctx,
            format!("expected a string, got {other:?}"),
        )),
    }
}

pub(crate) fn string(ctx: Ctx, v: &Value) -> Result<String, QueueError> {
    opt_string(ctx, v)?.ok_or_else(|| QueueError::unexpected(ctx, "expected a string, got nil"))
}

pub(crate) fn int(ctx: Ctx, v: &Value) -> Result<i64, QueueError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(_) | Value::SimpleString(_) => {
            let s = string(ctx, v)?;
            s.parse()
                .map_err(|_| QueueError::unexpected(ctx, format!("expected an integer, got {s:?}")))
        }
        other => Err(QueueError::unexpected(
            ctx,
            format!("expected an integer, got {other:?}"),
        )),
    }
}

pub(crate) fn u64_of(ctx: Ctx, v: &Value) -> Result<u64, QueueError> {
    let i = int(ctx, v)?;
    u64::try_from(i).map_err(|_| QueueError::unexpected(ctx, format!("negative value {i}")))
}

pub(crate) fn u32_of(ctx: Ctx, v: &Value) -> Result<u32, QueueError> {
    let i = int(ctx, v)?;
    u32::try_from(i).map_err(|_| QueueError::unexpected(ctx, format!("value {i} out of range")))
}

/// Parses a decimal string field (as stored in hashes) into a number.
pub(crate) fn parse_num<T: std::str::FromStr>(
    ctx: Ctx,
    field: &str,
    s: &str,
) -> Result<T, QueueError> {
    s.parse()
        .map_err(|_| QueueError::unexpected(ctx, format!("field {field} is not a number: {s:?}")))
}

/// A flat `[field, value, field, value, ...]` list (stream entry fields) as pairs.
pub(crate) fn field_pairs(ctx: Ctx, v: &Value) -> Result<Fields, QueueError> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Ok((string(ctx, k)?, string(ctx, v)?)))
            .collect(),
        other => {
            let items = array_or_nil(ctx, other)?;
            if items.len() % 2 != 0 {
                return Err(QueueError::unexpected(ctx, "odd number of field items"));
            }
            items
                .chunks(2)
                .map(|kv| Ok((string(ctx, &kv[0])?, string(ctx, &kv[1])?)))
                .collect()
        }
    }
}

/// A reply of named fields with values of any type (`XINFO` replies: a RESP3 map, or a flat
/// RESP2 list), by field name.
pub(crate) fn value_map(
    ctx: Ctx,
    v: &Value,
) -> Result<std::collections::HashMap<String, Value>, QueueError> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Ok((string(ctx, k)?, v.clone())))
            .collect(),
        other => array(ctx, other)?
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| Ok((string(ctx, &kv[0])?, kv[1].clone())))
            .collect(),
    }
}

/// An optional number stored as text; absent or empty is `None`.
pub(crate) fn opt_num<T: std::str::FromStr>(
    ctx: Ctx,
    field: &str,
    v: Option<String>,
) -> Result<Option<T>, QueueError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => parse_num(ctx, field, &s).map(Some),
    }
}

/// A number stored as text; absent or empty is the type's default.
pub(crate) fn num<T: std::str::FromStr + Default>(
    ctx: Ctx,
    field: &str,
    v: Option<String>,
) -> Result<T, QueueError> {
    Ok(opt_num(ctx, field, v)?.unwrap_or_default())
}

/// `[[id, [field, value, ...]], ...]` as parsed entries.
pub(crate) fn entries(ctx: Ctx, v: &Value) -> Result<Vec<(String, Fields)>, QueueError> {
    array_or_nil(ctx, v)?
        .iter()
        .map(|e| match array(ctx, e)? {
            [id, fields] => Ok((string(ctx, id)?, field_pairs(ctx, fields)?)),
            items => Err(QueueError::unexpected(ctx, format!("{items:?}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers() {
        let s = Value::BulkString(b"42".to_vec());
        assert_eq!(int("t", &s).unwrap(), 42);
        assert_eq!(int("t", &Value::Int(-3)).unwrap(), -3);
        assert!(u64_of("t", &Value::Int(-3)).is_err());
        assert!(int("t", &Value::Nil).is_err());
        assert_eq!(opt_string("t", &Value::Nil).unwrap(), None);
        assert!(string("t", &Value::Nil).is_err());
        assert!(array("t", &Value::Int(1)).is_err());
        assert_eq!(array_or_nil("t", &Value::Nil).unwrap().len(), 0);
        let fields = Value::Array(vec![
            Value::BulkString(b"wf".to_vec()),
            Value::BulkString(b"abc".to_vec()),
        ]);
        assert_eq!(
            field_pairs("t", &fields).unwrap(),
            vec![("wf".to_owned(), "abc".to_owned())]
        );
        assert!(field_pairs("t", &Value::Array(vec![Value::Int(1)])).is_err());
        assert_eq!(parse_num::<u32>("t", "f", "7").unwrap(), 7);
        assert!(parse_num::<u32>("t", "f", "x").is_err());
    }
}
