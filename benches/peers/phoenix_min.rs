//! The minimal Phoenix Channels server both baseline peers speak, sans-IO: decoding a client frame
//! (V1 object or V2 array), the per-connection rules (heartbeat reply, join of `rooms:*` with the
//! close of a duplicate, leave, "unmatched topic", a push on a joined topic broadcast), and the
//! encodings. Each peer wraps the texts in its own frame type and applies the effect to its own
//! topic table, so the two differ only in their WebSocket library and I/O, which is what they
//! are there to compare.

use std::collections::HashMap;

use serde_json::{json, Value};

/// One decoded client frame, V1 or V2.
pub struct Inbound {
    pub join_ref: Value,
    pub msg_ref: Value,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

pub fn decode(text: &[u8], v2: bool) -> Option<Inbound> {
    let value: Value = serde_json::from_slice(text).ok()?;
    if v2 {
        let arr = value.as_array()?;
        if arr.len() < 5 {
            return None;
        }
        Some(Inbound {
            join_ref: arr[0].clone(),
            msg_ref: arr[1].clone(),
            topic: arr[2].as_str()?.to_owned(),
            event: arr[3].as_str()?.to_owned(),
            payload: arr[4].clone(),
        })
    } else {
        let obj = value.as_object()?;
        Some(Inbound {
            join_ref: Value::Null,
            msg_ref: obj.get("ref")?.clone(),
            topic: obj.get("topic")?.as_str()?.to_owned(),
            event: obj.get("event")?.as_str()?.to_owned(),
            payload: obj.get("payload")?.clone(),
        })
    }
}

/// A server message to one channel (reply or close) in the connection's serializer.
pub fn encode(
    v2: bool,
    join_ref: &Value,
    msg_ref: &Value,
    topic: &str,
    event: &str,
    payload: Value,
) -> String {
    if v2 {
        json!([join_ref, msg_ref, topic, event, payload]).to_string()
    } else {
        json!({"topic": topic, "event": event, "payload": payload, "ref": msg_ref}).to_string()
    }
}

/// A broadcast as every member of its topic gets it (no join_ref, ref null).
pub fn broadcast(v2: bool, topic: &str, event: &str, payload: &Value) -> String {
    encode(
        v2,
        &Value::Null,
        &Value::Null,
        topic,
        event,
        payload.clone(),
    )
}

fn reply(v2: bool, join_ref: &Value, msg: &Inbound, status: &str, response: Value) -> String {
    let payload = json!({"status": status, "response": response});
    encode(v2, join_ref, &msg.msg_ref, &msg.topic, "phx_reply", payload)
}

/// What a client frame asks of the peer's topic table.
pub enum Effect {
    Join(String),
    Leave(String),
    Broadcast(Inbound),
}

/// One connection's channels: topic → join_ref.
pub struct Channels {
    v2: bool,
    joined: HashMap<String, Value>,
}

impl Channels {
    pub fn new(v2: bool) -> Channels {
        Channels {
            v2,
            joined: HashMap::new(),
        }
    }

    /// The topics joined (to leave them when the connection ends).
    pub fn topics(&self) -> impl Iterator<Item = &String> {
        self.joined.keys()
    }

    /// Applies one client frame: the texts to send back, in order, and what to do to the topic
    /// table (before those texts are sent).
    pub fn handle(&mut self, msg: Inbound) -> (Vec<String>, Option<Effect>) {
        let v2 = self.v2;
        let null = Value::Null;
        let unmatched = |msg: &Inbound| {
            let response = json!({"reason": "unmatched topic"});
            vec![reply(v2, &null, msg, "error", response)]
        };
        if msg.topic == "phoenix" && msg.event == "heartbeat" {
            return (vec![reply(v2, &null, &msg, "ok", json!({}))], None);
        }
        match msg.event.as_str() {
            "phx_join" if msg.topic.starts_with("rooms:") => {
                let mut out = Vec::new();
                if let Some(old) = self.joined.remove(&msg.topic) {
                    out.push(encode(v2, &old, &old, &msg.topic, "phx_close", json!({})));
                }
                self.joined.insert(msg.topic.clone(), msg.join_ref.clone());
                out.push(reply(v2, &msg.join_ref, &msg, "ok", json!({})));
                (out, Some(Effect::Join(msg.topic)))
            }
            "phx_join" => (unmatched(&msg), None),
            "phx_leave" => match self.joined.remove(&msg.topic) {
                Some(join_ref) => {
                    let out = vec![
                        reply(v2, &join_ref, &msg, "ok", json!({})),
                        encode(v2, &join_ref, &join_ref, &msg.topic, "phx_close", json!({})),
                    ];
                    (out, Some(Effect::Leave(msg.topic)))
                }
                None => (vec![reply(v2, &null, &msg, "ok", json!({}))], None),
            },
            _ if self.joined.contains_key(&msg.topic) => (Vec::new(), Some(Effect::Broadcast(msg))),
            _ => (unmatched(&msg), None),
        }
    }
}
