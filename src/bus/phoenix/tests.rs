//! Every mapping rule checked on bytes made by the installed Erlang (`erl`, Debian's
//! erlang-base, installed by scripts/test.sh): the fixtures are produced by `term_to_binary` at
//! test time, and what ringgate encodes is read back by `binary_to_term`.

use std::process::Command;

use base64::Engine;

use super::*;

/// Erlang funs every fixture expression may use: `B(Topic, Event, Payload)` a
/// `%Phoenix.Socket.Broadcast{}`, `M(Mode, Node, Msg)` the adapter's message on "rooms:lobby".
const PRELUDE: &str = "B = fun(T, E, P) -> #{'__struct__' => 'Elixir.Phoenix.Socket.Broadcast', \
    topic => T, event => E, payload => P} end, \
    M = fun(Mode, Node, Msg) -> {3, Mode, Node, <<\"rooms:lobby\">>, Msg, 'Elixir.Phoenix.Channel.Server'} end, \
    L = fun(P) -> term_to_binary(M(except, <<\"elixir@app\">>, B(<<\"rooms:lobby\">>, <<\"new_msg\">>, P))) end, ";

/// Runs `erl` once; each expression must evaluate to a binary, returned in order.
fn erl(exprs: &[&str]) -> Vec<Vec<u8>> {
    let funs: Vec<String> = exprs.iter().map(|e| format!("fun() -> {e} end")).collect();
    let script = format!(
        "{PRELUDE}[io:format(\"~s~n\", [base64:encode(F())]) || F <- [{}]], halt().",
        funs.join(", ")
    );
    let out = Command::new("erl")
        .args(["-noshell", "-eval", &script])
        .env("ERL_CRASH_DUMP_SECONDS", "0")
        .output()
        .expect("erl (Debian erlang-base) must be installed: scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "erl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<u8>> = text
        .lines()
        .map(|l| base64::engine::general_purpose::STANDARD.decode(l).unwrap())
        .collect();
    assert_eq!(lines.len(), exprs.len(), "erl printed {text}");
    lines
}

fn codec() -> PhoenixCodec {
    PhoenixCodec::new(&BusConfig {
        phoenix_pubsub: Some("MyApp.PubSub".into()),
        ..BusConfig::default()
    })
}

fn receive(body: &[u8]) -> Result<Received, CodecError> {
    codec().receive(body, "ringgate@a", &|_| true)
}

fn json_of(body: &[u8]) -> String {
    match receive(body) {
        Ok(Received::Broadcast(Envelope {
            payload: BusPayload::Json(raw),
            topic,
            event,
            ..
        })) => {
            assert_eq!((&*topic, &*event), ("rooms:lobby", "new_msg"));
            raw.get().to_string()
        }
        other => panic!("not a JSON broadcast: {other:?}"),
    }
}

#[test]
fn channel_is_the_adapters() {
    assert_eq!(
        adapter_channel("MyApp.PubSub"),
        "phx:Elixir.MyApp.PubSub.Adapter"
    );
    assert_eq!(
        adapter_channel("Elixir.MyApp.PubSub"),
        "phx:Elixir.MyApp.PubSub.Adapter"
    );
    assert_eq!(
        codec().shared_channel(),
        Some("phx:Elixir.MyApp.PubSub.Adapter")
    );
}

#[test]
fn payload_terms_map_to_the_json_jason_writes() {
    let cases: [(&str, &str); 12] = [
        // Atoms and strings → strings; module atoms keep their "Elixir." prefix.
        (
            "#{a => foo, b => <<\"bar\">>, c => 'Elixir.Foo'}",
            r#"{"a":"foo","b":"bar","c":"Elixir.Foo"}"#,
        ),
        // nil/true/false.
        (
            "#{n => nil, t => true, f => false}",
            r#"{"f":false,"n":null,"t":true}"#,
        ),
        // Integers of every ETF width, big ones included.
        (
            "#{i => [0, 255, 256, -1, 2147483647, 2147483648, -2147483649, 123456789012345678901234567890]}",
            r#"{"i":[0,255,256,-1,2147483647,2147483648,-2147483649,123456789012345678901234567890]}"#,
        ),
        // Floats (NEW_FLOAT_EXT) as fwrite_g writes them.
        (
            "#{f => [1.0, 0.1, -2.5, 1.0e21, 1.2e-4, 123456.0]}",
            r#"{"f":[1.0,0.1,-2.5,1.0e21,1.2e-4,123456.0]}"#,
        ),
        // Nested maps and lists; an empty map and list.
        (
            "#{a => #{b => #{c => [1, #{d => []}]}}, e => #{}}",
            r#"{"a":{"b":{"c":[1,{"d":[]}]}},"e":{}}"#,
        ),
        // A charlist travels as STRING_EXT and Jason writes it as a list of integers.
        ("#{s => \"hi\"}", r#"{"s":[104,105]}"#),
        // Unicode strings and escapes: only `"`, `\` and control characters are escaped.
        (
            "#{<<\"k\\x{e9}y\"/utf8>> => <<\"h\\x{e9}llo \\x{4e16}\\x{754c} \\x{1F600} \\\"q\\\" \\\\ / \\n\"/utf8>>}",
            "{\"k\u{e9}y\":\"h\u{e9}llo \u{4e16}\u{754c} \u{1F600} \\\"q\\\" \\\\ / \\n\"}",
        ),
        // Key kinds and Erlang's key order: numbers < atoms < binaries.
        (
            "#{<<\"c\">> => 3, b => 2, 1 => a, nil => x}",
            r#"{"1":"a","b":2,"nil":"x","c":3}"#,
        ),
        // A list of maps (the usual "messages" payload).
        (
            "#{msgs => [#{id => 1, body => <<\"x\">>}, #{id => 2, body => <<\"y\">>}]}",
            r#"{"msgs":[{"body":"x","id":1},{"body":"y","id":2}]}"#,
        ),
        // An atom with a non-ASCII name (ATOM_UTF8).
        ("#{k => '\\x{e9}t\\x{e9}'}", "{\"k\":\"\u{e9}t\u{e9}\"}"),
        // Deep enough to be real, shallow enough for the default limit.
        (
            "lists:foldl(fun(_, Acc) -> #{x => Acc} end, #{}, lists:seq(1, 30))",
            &format!("{}{{}}{}", r#"{"x":"#.repeat(30), "}".repeat(30)),
        ),
        // A large map (> 32 keys: Erlang's hash map) comes out sorted.
        (
            "maps:from_list([{K, K} || K <- lists:seq(1, 40)])",
            &format!(
                "{{{}}}",
                (1..=40)
                    .map(|k| format!("\"{k}\":{k}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
    ];
    let exprs: Vec<String> = cases.iter().map(|(p, _)| format!("L({p})")).collect();
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    for ((payload, want), body) in cases.iter().zip(erl(&exprs)) {
        assert_eq!(json_of(&body), *want, "payload {payload}");
        // And it is valid JSON.
        serde_json::from_str::<serde_json::Value>(want).unwrap();
    }
}

#[test]
fn floats_match_erlang_fwrite_g() {
    let floats = [
        "1.0/3",
        "2.0/3*1.0e300",
        "math:pi()*1.0e-300",
        "1.0e-10",
        "9007199254740993.0",
        "0.5e-323",
        "1.7976931348623157e308",
        "1000.0",
        "10000.0",
        "0.001",
        "0.00099",
        "123.456",
        "-1.0e-7",
        "1.0e15",
        "1.0e16",
        "12345678.9",
    ];
    let mut exprs = Vec::new();
    for f in floats {
        exprs.push(format!("L(#{{f => {f}}})"));
        exprs.push(format!("list_to_binary(io_lib_format:fwrite_g({f}))"));
    }
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let out = erl(&exprs);
    for (pair, f) in out.chunks(2).zip(floats) {
        let want = format!("{{\"f\":{}}}", String::from_utf8(pair[1].clone()).unwrap());
        assert_eq!(json_of(&pair[0]), want, "{f}");
    }
}

#[test]
fn binary_payloads_become_binary_broadcasts() {
    let [body] = erl(&["L({binary, <<0, 1, 255, 2>>})"]).try_into().unwrap();
    let Ok(Received::Broadcast(e)) = receive(&body) else {
        panic!("not a broadcast")
    };
    assert_eq!(e.payload, BusPayload::Binary(vec![0, 1, 255, 2]));
}

#[test]
fn compressed_messages_read_like_plain_ones() {
    let p = "#{body => binary:copy(<<\"hello \">>, 200), n => 1}";
    let bodies = erl(&[
        &format!("L({p})"),
        &format!("term_to_binary(binary_to_term(L({p})), [compressed])"),
        &format!("term_to_binary(binary_to_term(L({p})), [{{compressed, 9}}])"),
    ]);
    assert_eq!(bodies[1][1], scan::COMPRESSED);
    assert!(bodies[1].len() < bodies[0].len() / 4);
    let want = json_of(&bodies[0]);
    assert!(want.contains("hello hello"));
    assert_eq!(json_of(&bodies[1]), want);
    assert_eq!(json_of(&bodies[2]), want);
}

#[test]
fn terms_json_cannot_carry_are_refused_with_their_reason() {
    let cases = [
        ("L(#{p => self()})", Unsupported::Pid),
        ("L(#{r => make_ref()})", Unsupported::Reference),
        ("L(#{t => {1, 2}})", Unsupported::Tuple),
        ("L(#{l => [1 | 2]})", Unsupported::ImproperList),
        ("L(#{b => <<1:3>>})", Unsupported::Bitstring),
        ("L(#{f => fun erlang:node/0})", Unsupported::Fun),
        ("L(#{f => fun() -> ok end})", Unsupported::Fun),
        (
            "L(#{d => #{'__struct__' => 'Elixir.Date', year => 2026, month => 1, day => 2, calendar => 'Elixir.Calendar.ISO'}})",
            Unsupported::Struct,
        ),
        ("L(#{{1, 2} => a})", Unsupported::MapKey),
        ("L(#{s => <<255, 0>>})", Unsupported::InvalidUtf8),
        ("L([1, 2])", Unsupported::PayloadNotAMap),
        ("L(<<\"text\">>)", Unsupported::PayloadNotAMap),
        (
            "term_to_binary(M(except, <<\"x\">>, B(<<\"rooms:lobby\">>, new_msg, #{})))",
            Unsupported::Header,
        ),
        (
            "term_to_binary(M(except, <<\"x\">>, B(<<\"rooms:other\">>, <<\"e\">>, #{})))",
            Unsupported::Header,
        ),
    ];
    let exprs: Vec<&str> = cases.iter().map(|(e, _)| *e).collect();
    for ((expr, want), body) in cases.iter().zip(erl(&exprs)) {
        assert_eq!(
            receive(&body),
            Err(CodecError::Unsupported(*want)),
            "{expr}"
        );
    }
}

#[test]
fn modes_nodes_and_other_traffic_are_told_apart() {
    let msg = "B(<<\"rooms:lobby\">>, <<\"new_msg\">>, #{a => 1})";
    let cases: Vec<(String, Option<Ignored>)> = vec![
        // Another node's broadcast.
        (format!("M(except, <<\"elixir@app\">>, {msg})"), None),
        // A node() atom as name (the adapter's default): never equal to our binary name.
        (format!("M(except, 'ringgate@a', {msg})"), None),
        // Our own, back from Redis.
        (format!("M(except, <<\"ringgate@a\">>, {msg})"), Some(Ignored::Echo)),
        // direct_broadcast to us, and to someone else.
        (format!("M(only, <<\"ringgate@a\">>, {msg})"), None),
        (format!("M(only, <<\"elixir@app\">>, {msg})"), Some(Ignored::OtherNode)),
        // The app's other PubSub traffic: a plain tuple, a plain map, another struct.
        (
            "M(except, <<\"x\">>, {presence_diff, #{}})".into(),
            Some(Ignored::NotABroadcast),
        ),
        ("M(except, <<\"x\">>, #{a => 1})".into(), Some(Ignored::NotABroadcast)),
        (
            "M(except, <<\"x\">>, #{'__struct__' => 'Elixir.Phoenix.Socket.Message'})".into(),
            Some(Ignored::NotABroadcast),
        ),
        // An older adapter's message.
        (
            format!("{{2, self(), <<\"rooms:lobby\">>, {msg}}}"),
            Some(Ignored::Version),
        ),
        (
            format!("{{4, except, <<\"x\">>, <<\"rooms:lobby\">>, {msg}, 'Elixir.Phoenix.Channel.Server'}}"),
            Some(Ignored::Version),
        ),
        // Dispatched by Phoenix.PubSub rather than the channel server: still a broadcast.
        (
            format!("{{3, except, <<\"x\">>, <<\"rooms:lobby\">>, {msg}, 'Elixir.Phoenix.PubSub'}}"),
            None,
        ),
    ];
    let exprs: Vec<String> = cases
        .iter()
        .map(|(t, _)| format!("term_to_binary({t})"))
        .collect();
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    for ((expr, want), body) in cases.iter().zip(erl(&exprs)) {
        match (receive(&body), want) {
            (Ok(Received::Broadcast(e)), None) => {
                assert_eq!(
                    e.payload,
                    BusPayload::Json(RawValue::from_string(r#"{"a":1}"#.into()).unwrap())
                );
            }
            (Ok(Received::Ignored(got)), Some(want)) => assert_eq!(got, *want, "{expr}"),
            (got, _) => panic!("{expr}: {got:?}, wanted {want:?}"),
        }
    }
    // A topic without local members is dropped before its payload is read.
    let [body] = erl(&["L(#{p => self()})"]).try_into().unwrap();
    assert_eq!(
        codec().receive(&body, "ringgate@a", &|t| t != "rooms:lobby"),
        Ok(Received::Ignored(Ignored::NoMembers))
    );
}

fn broadcast(payload: BusPayload) -> BusMessage {
    BusMessage::Broadcast(Envelope {
        origin: "ringgate@a".into(),
        seq: 7,
        topic: "rooms:lobby".into(),
        event: "new_msg".into(),
        payload,
    })
}

#[test]
fn what_ringgate_publishes_is_the_adapters_tuple_for_binary_to_term() {
    let json = r#"{"body":"h\u00e9llo \ud83d\ude00","n":[1,-1,-300,2.5,null,true,false,4294967296,-9007199254740993,6.5761118648063044e224],"m":{"k":[]},"neg":[-1,-2]}"#;
    let mut plain = Vec::new();
    let mut packed = Vec::new();
    let mut bin = Vec::new();
    let mut c = codec();
    c.encode(
        &broadcast(BusPayload::Json(
            RawValue::from_string(json.into()).unwrap(),
        )),
        &mut plain,
    )
    .unwrap();
    c.compress = true;
    c.encode(
        &broadcast(BusPayload::Json(
            RawValue::from_string(json.into()).unwrap(),
        )),
        &mut packed,
    )
    .unwrap();
    assert_eq!(packed[1], scan::COMPRESSED);
    c.encode(&broadcast(BusPayload::Binary(vec![0, 255, 7])), &mut bin)
        .unwrap();
    let want_payload = "#{<<\"body\">> => <<\"h\\x{e9}llo \\x{1F600}\"/utf8>>, \
        <<\"n\">> => [1, -1, -300, 2.5, nil, true, false, 4294967296, -9007199254740993, 6.5761118648063044e224], \
        <<\"m\">> => #{<<\"k\">> => []}, <<\"neg\">> => [-1, -2]}";
    let want = |p: &str| {
        format!(
            "{{3, except, <<\"ringgate@a\">>, <<\"rooms:lobby\">>, B(<<\"rooms:lobby\">>, <<\"new_msg\">>, {p}), 'Elixir.Phoenix.Channel.Server'}}"
        )
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let check = |bytes: &[u8], term: String| {
        format!(
            "(fun(X) -> case X =:= {term} of true -> <<\"ok\">>; false -> unicode:characters_to_binary(io_lib:format(\"~p\", [X])) end end)(binary_to_term(base64:decode(<<\"{}\">>)))",
            b64(bytes)
        )
    };
    let out = erl(&[
        &check(&plain, want(want_payload)),
        &check(&packed, want(want_payload)),
        &check(&bin, want("{binary, <<0, 255, 7>>}")),
    ]);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(o), "ok", "message {i}");
    }
    // And it reads back as the same broadcast (on another node).
    let Ok(Received::Broadcast(e)) = c.receive(&packed, "other", &|_| true) else {
        panic!("own message unreadable")
    };
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let BusPayload::Json(raw) = e.payload else {
        panic!("binary")
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(raw.get()).unwrap(),
        v
    );
    assert_eq!(
        c.receive(&plain, "ringgate@a", &|_| true),
        Ok(Received::Ignored(Ignored::Echo))
    );
}

#[test]
fn damaged_and_hostile_messages_fail_cleanly() {
    let [body, packed] = erl(&[
        "L(#{a => [1, 2.5, <<\"x\">>, #{b => nil}]})",
        "term_to_binary(binary_to_term(L(#{a => binary:copy(<<\"y\">>, 500)})), [compressed])",
    ])
    .try_into()
    .unwrap();
    for b in [&body, &packed] {
        for cut in 0..b.len() {
            assert!(receive(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..b.len() {
            for x in [0u8, 0x7f, 0xff] {
                let mut m = b.clone();
                m[i] = x;
                let _ = receive(&m);
            }
        }
    }
    let mut c = codec();
    c.limits.max_bytes = 100;
    assert_eq!(
        c.receive(&packed, "me", &|_| true),
        Err(CodecError::Rejected(Reject::TooLarge))
    );
}
