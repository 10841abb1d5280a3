//! Payload terms to JSON text the way Phoenix's JSON serializer (Jason) writes them, and JSON
//! payloads to the terms Phoenix would have decoded them into (docs/protocol.md, "Phoenix.PubSub
//! Redis adapter", has the rules and their sources).

use std::cmp::Ordering;

use eetf::{BigInteger, Binary, FixInteger, Float, List, Map, Term};

/// Why a payload cannot be written as JSON (Jason would raise on it). Each is a label of
/// `ringgate_bus_unsupported_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    Pid,
    Port,
    Reference,
    Fun,
    Tuple,
    ImproperList,
    Bitstring,
    /// A map with `__struct__`: Jason encodes a struct only through the app's own encoder.
    Struct,
    /// A map key that is not an atom, a string or a number.
    MapKey,
    /// A binary that is not UTF-8 where a string is needed.
    InvalidUtf8,
    /// The payload is neither a map nor `{:binary, data}` (Phoenix raises on it too).
    PayloadNotAMap,
    /// The broadcast's topic or event is not a string, or its topic differs from the PubSub one.
    Header,
}

impl Unsupported {
    pub const ALL: [Self; 12] = [
        Self::Pid,
        Self::Port,
        Self::Reference,
        Self::Fun,
        Self::Tuple,
        Self::ImproperList,
        Self::Bitstring,
        Self::Struct,
        Self::MapKey,
        Self::InvalidUtf8,
        Self::PayloadNotAMap,
        Self::Header,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Self::Pid => "pid",
            Self::Port => "port",
            Self::Reference => "reference",
            Self::Fun => "fun",
            Self::Tuple => "tuple",
            Self::ImproperList => "improper_list",
            Self::Bitstring => "bitstring",
            Self::Struct => "struct",
            Self::MapKey => "map_key",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::PayloadNotAMap => "payload_not_a_map",
            Self::Header => "header",
        }
    }
}

/// Appends `t` as JSON to `out`.
pub fn write(t: &Term, out: &mut String) -> Result<(), Unsupported> {
    match t {
        Term::Atom(a) => match a.name.as_str() {
            "nil" => out.push_str("null"),
            "true" => out.push_str("true"),
            "false" => out.push_str("false"),
            name => string(name, out),
        },
        Term::FixInteger(i) => out.push_str(&i.value.to_string()),
        Term::BigInteger(i) => out.push_str(&i.value.to_string()),
        Term::Float(f) => float(f.value, out),
        Term::Binary(b) => string(utf8(&b.bytes)?, out),
        Term::ByteList(l) => {
            out.push('[');
            for (i, b) in l.bytes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&b.to_string());
            }
            out.push(']');
        }
        Term::List(l) => {
            out.push('[');
            for (i, e) in l.elements.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(e, out)?;
            }
            out.push(']');
        }
        Term::Map(m) => object(m, out)?,
        Term::Pid(_) => return Err(Unsupported::Pid),
        Term::Port(_) => return Err(Unsupported::Port),
        Term::Reference(_) => return Err(Unsupported::Reference),
        Term::ExternalFun(_) | Term::InternalFun(_) => return Err(Unsupported::Fun),
        Term::BitBinary(_) => return Err(Unsupported::Bitstring),
        Term::ImproperList(_) => return Err(Unsupported::ImproperList),
        Term::Tuple(_) => return Err(Unsupported::Tuple),
    }
    Ok(())
}

pub fn utf8(b: &[u8]) -> Result<&str, Unsupported> {
    std::str::from_utf8(b).map_err(|_| Unsupported::InvalidUtf8)
}

/// A JSON string as Jason's default `:json` escape writes it: `"` and `\\` escaped, `\b \t \n
/// \f \r` by letter, other control characters as `\u00XX` (upper-case hex), everything else —
/// `/` and non-ASCII included — as is.
fn string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Is `m` a struct (`__struct__` key)?
pub fn is_struct(m: &Map) -> bool {
    m.map.keys().any(|k| atom_is(k, "__struct__"))
}

pub fn atom_is(t: &Term, name: &str) -> bool {
    matches!(t, Term::Atom(a) if a.name == name)
}

/// A map's key as a JSON object key, as Jason's `Encode.key/2` makes it: atoms (`nil`, `true`
/// and `false` included) and strings as they are, numbers through `to_string`.
fn key(t: &Term) -> Result<std::borrow::Cow<'_, str>, Unsupported> {
    Ok(match t {
        Term::Atom(a) => a.name.as_str().into(),
        Term::Binary(b) => utf8(&b.bytes)?.into(),
        Term::FixInteger(i) => i.value.to_string().into(),
        Term::BigInteger(i) => i.value.to_string().into(),
        Term::Float(f) => {
            let mut s = String::new();
            float(f.value, &mut s);
            s.into()
        }
        _ => return Err(Unsupported::MapKey),
    })
}

pub fn object(m: &Map, out: &mut String) -> Result<(), Unsupported> {
    if is_struct(m) {
        return Err(Unsupported::Struct);
    }
    // Erlang keeps a map of up to 32 keys sorted by term order and Jason writes it in that
    // order; `eetf` hands us a hash map, so sort again (bigger maps come out sorted too, where
    // Jason's order would be the hash order: JSON objects are unordered either way).
    let mut entries: Vec<(&Term, &Term)> = m.map.iter().collect();
    entries.sort_by(|a, b| term_order(a.0, b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&key(k)?, out);
        out.push(':');
        write(v, out)?;
    }
    out.push('}');
    Ok(())
}

/// Erlang's term order over the kinds a JSON key can come from: numbers < atoms < binaries.
fn term_order(a: &Term, b: &Term) -> Ordering {
    fn rank(t: &Term) -> u8 {
        match t {
            Term::FixInteger(_) | Term::BigInteger(_) | Term::Float(_) => 0,
            Term::Atom(_) => 1,
            Term::Binary(_) => 3,
            _ => 2,
        }
    }
    fn num(t: &Term) -> f64 {
        match t {
            Term::FixInteger(i) => f64::from(i.value),
            Term::BigInteger(i) => i.value.to_string().parse().unwrap_or(0.0),
            Term::Float(f) => f.value,
            _ => 0.0,
        }
    }
    match (a, b) {
        (Term::Atom(x), Term::Atom(y)) => x.name.as_bytes().cmp(y.name.as_bytes()),
        (Term::Binary(x), Term::Binary(y)) => x.bytes.cmp(&y.bytes),
        _ if rank(a) == 0 && rank(b) == 0 => num(a).total_cmp(&num(b)),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// A float as Erlang/OTP 25's `io_lib_format:fwrite_g/1` writes it (Jason's float encoding):
/// the shortest digits that read back to the same value, plain (`123.0`, `0.001`) or scientific
/// (`1.0e3`, `1.2e-4`) by the cost rule of `insert_decimal` there, scientific from 2^53 up, and
/// always a digit after the point. Later OTP releases move a few edges (`0.0001` is `1.0e-4`
/// there); the value is the same.
pub fn float(v: f64, out: &mut String) {
    // `{:e}` gives the shortest round-trip digits: `1.2345e-7`, `1e21`, `-0e0`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let mantissa = match mantissa.strip_prefix('-') {
        Some(m) => {
            out.push('-');
            m
        }
        None => mantissa,
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let len = digits.len() as i64;
    // Where the point goes: value = 0.<digits> × 10^point.
    let point = exp + 1;
    let exp_text = exp.to_string();
    let cost = exp_text.len() as i64 + 1 + if len == 1 { 2 } else { 1 };
    let zeros = |out: &mut String, n: i64| out.extend(std::iter::repeat_n('0', n.max(0) as usize));
    if point == 0 {
        out.push_str("0.");
        out.push_str(&digits);
    } else if point < 0 && 2 - point <= cost {
        out.push_str("0.");
        zeros(out, -point);
        out.push_str(&digits);
    } else if point >= len && point - len + 2 <= cost && v.abs() < 9_007_199_254_740_992.0 {
        out.push_str(&digits);
        zeros(out, point - len);
        out.push_str(".0");
    } else if point > 0 && point < len {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if len > 1 { &digits[1..] } else { "0" });
        out.push('e');
        out.push_str(&exp_text);
    }
}

/// A JSON payload as the term Phoenix holds after decoding it with Jason: objects → maps with
/// string keys, arrays → lists, strings → binaries, integers → integers, other numbers →
/// floats, `null`/`true`/`false` → atoms.
pub fn to_term(v: &serde_json::Value) -> Term {
    use serde_json::Value as V;
    match v {
        V::Null => eetf::Atom::from("nil").into(),
        V::Bool(b) => eetf::Atom::from(if *b { "true" } else { "false" }).into(),
        V::Number(n) => number(n),
        V::String(s) => Binary::from(s.as_bytes()).into(),
        V::Array(a) => List::from(a.iter().map(to_term).collect::<Vec<_>>()).into(),
        V::Object(o) => Map::from(
            o.iter()
                .map(|(k, v)| (Term::from(Binary::from(k.as_bytes())), to_term(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .into(),
    }
}

fn number(n: &serde_json::Number) -> Term {
    // Negative integers go out as big integers: `eetf` writes a list whose elements are all
    // integers below 256 as a byte string and would turn -1 into 255 there; Erlang reads a
    // small big integer back as the plain integer.
    if let Some(i) = n.as_u64() {
        if let Ok(small) = i32::try_from(i) {
            return FixInteger::from(small).into();
        }
        return BigInteger::from(i).into();
    }
    if let Some(i) = n.as_i64() {
        return BigInteger::from(i).into();
    }
    let f = n.as_f64().unwrap_or(0.0);
    Float::try_from(f).map_or_else(|_| eetf::Atom::from("nil").into(), Term::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(v: f64) -> String {
        let mut s = String::new();
        float(v, &mut s);
        s
    }

    #[test]
    fn strings_are_escaped_like_jason() {
        let mut s = String::new();
        string("a\"b\\c/d\u{8}\t\n\u{c}\r\u{1}\u{1f}é😀\u{2028}", &mut s);
        assert_eq!(
            s,
            "\"a\\\"b\\\\c/d\\b\\t\\n\\f\\r\\u0001\\u001Fé😀\u{2028}\""
        );
        serde_json::from_str::<String>(&s).unwrap();
    }

    #[test]
    fn floats_are_written_like_erlang_fwrite_g() {
        // Values and texts checked against `io_lib_format:fwrite_g/1` in OTP 25; the erl-backed
        // test in `phoenix::tests` checks more against the installed Erlang.
        for (v, want) in [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (0.00012, "1.2e-4"),
            (1000.0, "1.0e3"),
            (9007199254740992.0, "9.007199254740992e15"),
            (1.0e-5, "1.0e-5"),
            (123456.0, "123456.0"),
            (1.0e10, "1.0e10"),
            (1.0e21, "1.0e21"),
            (5.0e-324, "5.0e-324"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (-2.71, "-2.71"),
            (1.2345678901234567e19, "1.2345678901234567e19"),
        ] {
            assert_eq!(fmt(v), want, "{v}");
        }
    }
}
