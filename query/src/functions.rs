//! SQL functions over event payloads.
//!
//! - `json_get_str(json, 'path')`, `json_get_int`, `json_get_float`, `json_get_bool`,
//!   `json_get_json` (the raw JSON text of the value at the path);
//! - `as_text(bytes)`: bytes as UTF-8 text (invalid sequences become U+FFFD).
//!
//! `json` may be `key`/`value` (binary) or any text column. A path is dot-separated keys with
//! optional array indexes: `user.id`, `items[0].sku`, `items.0.sku`. The result is NULL when
//! the input is NULL or not JSON, the path does not exist, or the value has another type
//! (`json_get_int` of `"7"` or of `7.5` is NULL); JSON is never an error, because one bad event
//! must not fail a query over millions.
//!
//! Invariant: the JSON is walked, not built: keys not on the path are skipped without
//! allocating, and only the value found is decoded.

use std::fmt;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow_schema::DataType;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Every payload function, for registration in a session.
pub fn all() -> Vec<ScalarUDF> {
    let mut v: Vec<ScalarUDF> = [Kind::Str, Kind::Int, Kind::Float, Kind::Bool, Kind::Json]
        .into_iter()
        .map(|kind| ScalarUDF::new_from_impl(JsonGet::new(kind)))
        .collect();
    v.push(ScalarUDF::new_from_impl(AsText::new()));
    v
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses `a.b[2].c` (also `a.b.2.c`: a step of digits reads a key, or an index of an array).
fn parse_path(path: &str) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key.to_string()));
        } else if rest.is_empty() {
            return plan_err!("empty step in JSON path `{path}`");
        }
        while !rest.is_empty() {
            let Some(end) = rest.find(']') else {
                return plan_err!("unclosed `[` in JSON path `{path}`");
            };
            let Ok(i) = rest[1..end].parse() else {
                return plan_err!("array index in JSON path `{path}` is not a number");
            };
            out.push(Step::Index(i));
            rest = &rest[end + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return plan_err!("unexpected `{rest}` in JSON path `{path}`");
            }
        }
    }
    Ok(out)
}

/// Compares a JSON key with the wanted one, borrowing when the key has no escapes.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// Finds one step inside the value it is given: a member of an object or an element of an array
/// (a digits-only key also indexes an array).
struct Find<'s>(&'s Step);

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Step::Key(want) = self.0 else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(want))? {
            if hit && found.is_none() {
                found = Some(map.next_value::<&RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let want = match self.0 {
            Step::Index(i) => Some(*i),
            Step::Key(k) => k.parse().ok(),
        };
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == want {
                match seq.next_element::<&RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The raw JSON text at `path` in `doc`, if any.
fn lookup<'a>(doc: &'a [u8], path: &[Step]) -> Option<&'a RawValue> {
    let text = std::str::from_utf8(doc).ok()?;
    let mut cur: &'a RawValue = serde_json::from_str(text).ok()?;
    for step in path {
        let mut de = serde_json::Deserializer::from_str(cur.get());
        cur = Find(step).deserialize(&mut de).ok()??;
    }
    Some(cur)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Json,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonGet {
    kind: Kind,
    name: &'static str,
    signature: Signature,
}

impl JsonGet {
    fn new(kind: Kind) -> Self {
        let name = match kind {
            Kind::Str => "json_get_str",
            Kind::Int => "json_get_int",
            Kind::Float => "json_get_float",
            Kind::Bool => "json_get_bool",
            Kind::Json => "json_get_json",
        };
        JsonGet {
            kind,
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// A scalar result for a scalar input, else the array.
fn shaped_as_input(scalar: bool, out: ArrayRef) -> Result<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
    } else {
        ColumnarValue::Array(out)
    })
}

/// A JSON value as `T`; `None` when it is of another type.
fn typed<T: serde::de::DeserializeOwned>(v: &RawValue) -> Option<T> {
    serde_json::from_str(v.get()).ok()
}

/// The values of a binary or text column as bytes.
/// The bytes of row `i` (`None` when null).
type BytesAt<'a> = Box<dyn Fn(usize) -> Option<&'a [u8]> + 'a>;

fn bytes_at<'a>(a: &'a ArrayRef) -> Result<BytesAt<'a>> {
    Ok(match a.data_type() {
        DataType::Binary => {
            let a = a.as_binary::<i32>();
            Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
        }
        DataType::LargeBinary => {
            let a = a.as_binary::<i64>();
            Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
        }
        DataType::BinaryView => {
            let a = a.as_binary_view();
            Box::new(move |i| a.is_valid(i).then(|| a.value(i)))
        }
        DataType::Utf8 => {
            let a = a.as_string::<i32>();
            Box::new(move |i| a.is_valid(i).then(|| a.value(i).as_bytes()))
        }
        DataType::LargeUtf8 => {
            let a = a.as_string::<i64>();
            Box::new(move |i| a.is_valid(i).then(|| a.value(i).as_bytes()))
        }
        DataType::Utf8View => {
            let a = a.as_string_view();
            Box::new(move |i| a.is_valid(i).then(|| a.value(i).as_bytes()))
        }
        DataType::Null => Box::new(|_| None),
        other => return exec_err!("expected binary or text, got {other}"),
    })
}

fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Null
    )
}

impl ScalarUDFImpl for JsonGet {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !is_bytes(&args[0]) {
            return plan_err!(
                "{}: the first argument must be binary or text, not {}",
                self.name,
                args[0]
            );
        }
        if !matches!(
            args[1],
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return plan_err!("{}: the path must be text, like 'user.id'", self.name);
        }
        Ok(match self.kind {
            Kind::Str | Kind::Json => DataType::Utf8,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Bool => DataType::Boolean,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let path = match &args.args[1] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::LargeUtf8(Some(p))
                | ScalarValue::Utf8View(Some(p)),
            ) => parse_path(p)?,
            _ => return exec_err!("{}: the path must be a constant text", self.name),
        };
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let input = args.args[0].clone().into_array(args.number_rows)?;
        let get = bytes_at(&input)?;
        let n = input.len();
        let found = |i| get(i).and_then(|d| lookup(d, &path));
        let rows = || (0..n).map(found);
        let out: ArrayRef = match self.kind {
            Kind::Str => Arc::new(StringArray::from_iter(
                rows().map(|v| v.and_then(typed::<String>)),
            )),
            Kind::Json => Arc::new(StringArray::from_iter(rows().map(|v| v.map(RawValue::get)))),
            Kind::Int => Arc::new(Int64Array::from_iter(rows().map(|v| v.and_then(typed)))),
            Kind::Float => Arc::new(Float64Array::from_iter(rows().map(|v| v.and_then(typed)))),
            Kind::Bool => Arc::new(BooleanArray::from_iter(rows().map(|v| v.and_then(typed)))),
        };
        shaped_as_input(scalar, out)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AsText {
    signature: Signature,
}

impl AsText {
    fn new() -> Self {
        AsText {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AsText {
    fn name(&self) -> &str {
        "as_text"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !is_bytes(&args[0]) {
            return plan_err!(
                "as_text: the argument must be binary or text, not {}",
                args[0]
            );
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let input = args.args[0].clone().into_array(args.number_rows)?;
        let get = bytes_at(&input)?;
        let out =
            StringArray::from_iter((0..input.len()).map(|i| get(i).map(String::from_utf8_lossy)));
        shaped_as_input(scalar, Arc::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(doc: &'a str, path: &str) -> Option<&'a str> {
        lookup(doc.as_bytes(), &parse_path(path).unwrap()).map(RawValue::get)
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let doc = r#"{"user":{"id":"u1","n":7,"tags":["a","b"],"x\"y":1},"items":[{"sku":"s0"},{"sku":"s1"}],"user2":null}"#;
        assert_eq!(get(doc, "user.id"), Some(r#""u1""#));
        assert_eq!(get(doc, "user.n"), Some("7"));
        assert_eq!(get(doc, "user.tags[1]"), Some(r#""b""#));
        assert_eq!(get(doc, "items[1].sku"), Some(r#""s1""#));
        assert_eq!(get(doc, "items.0.sku"), Some(r#""s0""#));
        assert_eq!(get(doc, "user.missing"), None);
        assert_eq!(get(doc, "user.id.deeper"), None);
        assert_eq!(get(doc, "items[5]"), None);
        assert_eq!(get(doc, "user2.id"), None);
        assert_eq!(get("not json", "a"), None);
        assert_eq!(get(r#"{"a":1} trailing"#, "a"), None);
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[1").is_err());
        assert_eq!(
            parse_path("a[1][2].b").unwrap(),
            vec![
                Step::Key("a".into()),
                Step::Index(1),
                Step::Index(2),
                Step::Key("b".into())
            ]
        );
    }
}
