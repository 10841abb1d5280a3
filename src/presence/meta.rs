//! What a tracked entry is made of: its key and its meta, built from trusted claims and the join
//! payload as a route configures (`presence_key`, `presence_meta`), and the `phx_ref` that names
//! one entry. Sans-IO: plain values in, JSON text out.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde_json::{Map, Value};

/// The longest presence key, in bytes. 255 because a key is repeated in every diff and state for
/// each of its metas, and no identifier (user id, UUID, e-mail) needs more.
pub const MAX_KEY_BYTES: usize = 255;

/// Where an entry's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A claim of the verified connect token (trusted).
    Claim(String),
    /// A field of the join payload: chosen by the client, so untrusted.
    Param(String),
    /// The connection itself: every tracked join is its own member, keyed by its `phx_ref`.
    Conn,
}

/// Where a meta field comes from; the field keeps its name in the meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldSource {
    Claim,
    Param,
}

/// One allowlisted meta field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaField {
    pub source: FieldSource,
    pub name: String,
}

/// Names the meta always carries, which no configured field may take.
pub const RESERVED_FIELDS: [&str; 3] = ["phx_ref", "phx_ref_prev", "online_at"];

impl KeySource {
    /// `claim:<name>`, `param:<name>` or `conn`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec.split_once(':') {
            Some(("claim", name)) if !name.is_empty() => Ok(KeySource::Claim(name.into())),
            Some(("param", name)) if !name.is_empty() => Ok(KeySource::Param(name.into())),
            None if spec == "conn" => Ok(KeySource::Conn),
            _ => Err(format!(
                "presence_key {spec:?}: use \"claim:<name>\", \"param:<name>\" or \"conn\""
            )),
        }
    }
}

impl MetaField {
    /// `claim:<name>` or `param:<name>`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (source, name) = match spec.split_once(':') {
            Some(("claim", name)) => (FieldSource::Claim, name),
            Some(("param", name)) => (FieldSource::Param, name),
            _ => {
                return Err(format!(
                    "presence_meta entry {spec:?}: use \"claim:<name>\" or \"param:<name>\""
                ))
            }
        };
        if name.is_empty() || RESERVED_FIELDS.contains(&name) {
            return Err(format!(
                "presence_meta entry {spec:?}: the name is empty or reserved ({RESERVED_FIELDS:?})"
            ));
        }
        Ok(MetaField {
            source,
            name: name.into(),
        })
    }
}

/// Why an entry cannot be built; each is the `reason` of the join's error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("presence key missing")]
    KeyMissing,
    #[error("presence key too long")]
    KeyTooLong,
    #[error("presence meta too large")]
    MetaTooLarge,
}

/// The values an entry is built from: the connection's kept claims and the join payload, each a
/// JSON object when present.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    pub claims: Option<&'a Map<String, Value>>,
    pub params: Option<&'a Map<String, Value>>,
}

impl Inputs<'_> {
    fn get(&self, claim: bool, name: &str) -> Option<&Value> {
        let map = if claim { self.claims } else { self.params };
        map?.get(name)
    }
}

/// The key of an entry: a string value as it is, a number in its JSON spelling (Phoenix turns
/// every key into a string with `to_string`); anything else or nothing is [`MetaError::KeyMissing`].
/// `conn` keys are the entry's own `phx_ref`.
pub fn key(source: &KeySource, inputs: Inputs<'_>, phx_ref: &str) -> Result<String, MetaError> {
    let value = match source {
        KeySource::Conn => return Ok(phx_ref.to_owned()),
        KeySource::Claim(name) => inputs.get(true, name),
        KeySource::Param(name) => inputs.get(false, name),
    };
    let key = match value {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(MetaError::KeyMissing),
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(MetaError::KeyTooLong);
    }
    Ok(key)
}

/// The allowlisted fields present in `inputs`, as a JSON object (absent ones are left out), at
/// most `max_bytes` long.
pub fn fields(
    allow: &[MetaField],
    inputs: Inputs<'_>,
    max_bytes: usize,
) -> Result<Map<String, Value>, MetaError> {
    let mut out = Map::new();
    for field in allow {
        if let Some(v) = inputs.get(field.source == FieldSource::Claim, &field.name) {
            out.insert(field.name.clone(), v.clone());
        }
    }
    check_size(&out, max_bytes)?;
    Ok(out)
}

/// `fields` with the `param:` fields of the allowlist replaced by those present in `update` (a
/// client's `presence_update` payload). Claim fields are never replaced: they are trusted.
pub fn updated_fields(
    allow: &[MetaField],
    mut current: Map<String, Value>,
    update: &Map<String, Value>,
    max_bytes: usize,
) -> Result<Map<String, Value>, MetaError> {
    for field in allow.iter().filter(|f| f.source == FieldSource::Param) {
        if let Some(v) = update.get(&field.name) {
            current.insert(field.name.clone(), v.clone());
        }
    }
    check_size(&current, max_bytes)?;
    Ok(current)
}

fn check_size(fields: &Map<String, Value>, max_bytes: usize) -> Result<(), MetaError> {
    let len = serde_json::to_vec(fields).map_or(usize::MAX, |v| v.len());
    if len > max_bytes {
        return Err(MetaError::MetaTooLarge);
    }
    Ok(())
}

/// The meta of one entry as JSON text: `phx_ref` first, then `phx_ref_prev` for an update,
/// `online_at` (Unix seconds as a string, as in Phoenix's own Presence example), then the fields.
pub fn meta_json(
    phx_ref: &str,
    phx_ref_prev: Option<&str>,
    online_at: &str,
    fields: &Map<String, Value>,
) -> String {
    let mut out = String::with_capacity(64 + fields.len() * 24);
    out.push_str("{\"phx_ref\":");
    push_json_str(&mut out, phx_ref);
    if let Some(prev) = phx_ref_prev {
        out.push_str(",\"phx_ref_prev\":");
        push_json_str(&mut out, prev);
    }
    out.push_str(",\"online_at\":");
    push_json_str(&mut out, online_at);
    for (name, value) in fields {
        out.push(',');
        push_json_str(&mut out, name);
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// The parts of a stored meta an update keeps: `online_at` and the fields.
pub fn split_meta(meta: &str) -> (String, Map<String, Value>) {
    let mut map: Map<String, Value> = serde_json::from_str(meta).unwrap_or_default();
    map.remove("phx_ref");
    map.remove("phx_ref_prev");
    let online_at = match map.remove("online_at") {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    (online_at, map)
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping is the one every parser agrees with; a str always serializes.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Makes `phx_ref`s: unique per node (a counter) and across nodes (a random node part), 12 bytes
/// in base64 — 16 characters, the size of Phoenix's own refs.
#[derive(Debug)]
pub struct RefGen {
    node: u32,
    next: AtomicU64,
}

impl RefGen {
    pub fn new(node: u32) -> Self {
        RefGen {
            node,
            next: AtomicU64::new(0),
        }
    }

    pub fn next_ref(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&self.node.to_be_bytes());
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn key_specs_parse() {
        assert_eq!(
            KeySource::parse("claim:sub"),
            Ok(KeySource::Claim("sub".into()))
        );
        assert_eq!(
            KeySource::parse("param:user"),
            Ok(KeySource::Param("user".into()))
        );
        assert_eq!(KeySource::parse("conn"), Ok(KeySource::Conn));
        for bad in ["", "claim:", "sub", "header:x", "conn:x"] {
            assert!(KeySource::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            MetaField::parse("param:status"),
            Ok(MetaField {
                source: FieldSource::Param,
                name: "status".into()
            })
        );
        for bad in [
            "status",
            "param:",
            "claim:phx_ref",
            "param:online_at",
            "x:y",
        ] {
            assert!(MetaField::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_come_from_the_configured_source() {
        let claims = obj(json!({"sub": "u1", "n": 42, "o": {"a": 1}, "e": ""}));
        let params = obj(json!({"user": "p1"}));
        let inputs = Inputs {
            claims: Some(&claims),
            params: Some(&params),
        };
        let k = |s: &str| key(&KeySource::parse(s).unwrap(), inputs, "REF");
        assert_eq!(k("claim:sub"), Ok("u1".into()));
        assert_eq!(k("claim:n"), Ok("42".into()));
        assert_eq!(k("param:user"), Ok("p1".into()));
        assert_eq!(k("conn"), Ok("REF".into()));
        assert_eq!(k("claim:user"), Err(MetaError::KeyMissing));
        assert_eq!(k("claim:o"), Err(MetaError::KeyMissing));
        assert_eq!(k("claim:e"), Err(MetaError::KeyMissing));
        let long = obj(json!({ "user": "x".repeat(256) }));
        let inputs = Inputs {
            claims: None,
            params: Some(&long),
        };
        assert_eq!(
            key(&KeySource::Param("user".into()), inputs, "R"),
            Err(MetaError::KeyTooLong)
        );
    }

    #[test]
    fn meta_has_only_allowlisted_fields_within_the_bound() {
        let claims = obj(json!({"sub": "u1", "name": "Ann", "role": "admin"}));
        let params = obj(json!({"status": "away", "name": "Mallory", "secret": 1}));
        let inputs = Inputs {
            claims: Some(&claims),
            params: Some(&params),
        };
        let allow: Vec<_> = ["claim:name", "param:status", "param:device"]
            .iter()
            .map(|s| MetaField::parse(s).unwrap())
            .collect();
        let f = fields(&allow, inputs, 100).unwrap();
        assert_eq!(
            Value::Object(f.clone()),
            json!({"name": "Ann", "status": "away"})
        );
        assert_eq!(
            meta_json("R1", None, "1700000000", &f),
            r#"{"phx_ref":"R1","online_at":"1700000000","name":"Ann","status":"away"}"#
        );
        assert_eq!(fields(&allow, inputs, 10), Err(MetaError::MetaTooLarge));
        // An update replaces param fields only; a claim field stays.
        let upd = obj(json!({"status": "busy", "name": "Eve", "secret": 2}));
        let g = updated_fields(&allow, f, &upd, 100).unwrap();
        assert_eq!(
            Value::Object(g.clone()),
            json!({"name": "Ann", "status": "busy"})
        );
        let m = meta_json("R2", Some("R1"), "1700000000", &g);
        assert_eq!(
            m,
            r#"{"phx_ref":"R2","phx_ref_prev":"R1","online_at":"1700000000","name":"Ann","status":"busy"}"#
        );
        let (online_at, kept) = split_meta(&m);
        assert_eq!(online_at, "1700000000");
        assert_eq!(
            Value::Object(kept),
            json!({"name": "Ann", "status": "busy"})
        );
    }

    #[test]
    fn refs_are_unique_and_sized_like_phoenix() {
        let g = RefGen::new(7);
        let a = g.next_ref();
        let b = g.next_ref();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_ne!(RefGen::new(8).next_ref(), RefGen::new(7).next_ref());
    }
}
