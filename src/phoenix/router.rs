//! Which topics a client may join and what a client push on them does. The gateway is not
//! an application framework: a topic is joinable when it matches a configured pattern, and
//! a push is either broadcast to the topic (the Phoenix chat example's behaviour) or
//! refused.
//!
//! Patterns follow Phoenix's `channel "rooms:*", RoomChannel`: an exact topic, or a prefix
//! followed by a single `*` at the end (`"rooms:*"` matches `"rooms:"` plus anything,
//! including nothing; `"*"` matches every topic). A `*` anywhere else is a configuration
//! error, as in Phoenix. The first route that matches wins, in configuration order, again
//! as in Phoenix (its `channel` clauses are tried top to bottom): put exact topics before a
//! wildcard that covers them if they need different push rules.

use crate::presence::meta::{FieldSource, KeySource, MetaField};

/// What a client push (any event other than join, leave and heartbeat) on a joined topic
/// does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPush {
    /// Fan the event and payload out to every member of the topic, the sender included,
    /// and reply ok.
    Broadcast,
    /// Reply `{"status":"error","response":{"reason":"push not allowed"}}`; the topic is
    /// receive-only for clients (server broadcasts still reach them).
    Reject,
}

/// One configured topic pattern.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// An exact topic, or a prefix ending in `*`.
    pub pattern: String,
    pub on_push: OnPush,
    /// Joins need a connect token whose `channels` claim allows the topic (only meaningful with
    /// auth on). Default false: any routed topic may be joined unless the token restricts it.
    #[serde(default)]
    pub require_claim: bool,
    /// Track who is in each topic of this route (Phoenix.Presence): `presence_state` to a joiner,
    /// `presence_diff` to every member. Default false.
    #[serde(default)]
    pub presence: bool,
    /// What groups a topic's entries: `claim:<name>` (a claim of the verified token),
    /// `param:<name>` (a field of the join payload: client-chosen, untrusted) or `conn` (each
    /// join its own member). Default `conn`.
    #[serde(default)]
    pub presence_key: Option<String>,
    /// Claims and join-payload fields copied into each meta (`claim:<name>`, `param:<name>`);
    /// nothing else from the client reaches other members. Default none.
    #[serde(default)]
    pub presence_meta: Vec<String>,
}

/// A route's presence tracking, parsed from `presence_key` and `presence_meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceSpec {
    pub key: KeySource,
    pub meta: Vec<MetaField>,
}

impl PresenceSpec {
    /// Whether building an entry needs the connection's claims.
    pub fn uses_claims(&self) -> bool {
        matches!(self.key, KeySource::Claim(_))
            || self.meta.iter().any(|f| f.source == FieldSource::Claim)
    }

    /// Whether building an entry needs the join payload.
    pub fn uses_params(&self) -> bool {
        matches!(self.key, KeySource::Param(_))
            || self.meta.iter().any(|f| f.source == FieldSource::Param)
    }
}

fn presence_spec(route: &Route) -> Result<Option<PresenceSpec>, RouteError> {
    if !route.presence {
        return Ok(None);
    }
    let bad = |reason: String| RouteError::Presence {
        pattern: route.pattern.clone(),
        reason,
    };
    let key = KeySource::parse(route.presence_key.as_deref().unwrap_or("conn")).map_err(bad)?;
    let mut meta: Vec<MetaField> = Vec::new();
    for spec in &route.presence_meta {
        let field = MetaField::parse(spec).map_err(bad)?;
        if meta.iter().any(|f| f.name == field.name) {
            return Err(bad(format!("presence_meta names {:?} twice", field.name)));
        }
        meta.push(field);
    }
    Ok(Some(PresenceSpec { key, meta }))
}

impl Route {
    pub fn new(pattern: impl Into<String>, on_push: OnPush) -> Self {
        Route {
            pattern: pattern.into(),
            on_push,
            require_claim: false,
            presence: false,
            presence_key: None,
            presence_meta: Vec::new(),
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => topic == self.pattern,
        }
    }
}

/// A route the router cannot use; reported when the configuration is loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// `*` is only meaningful as the last character (Phoenix: "channels using splat
    /// patterns must end with *").
    #[error("route {pattern:?}: a '*' may only be the last character")]
    MisplacedWildcard { pattern: String },
    /// `presence_key` or `presence_meta` cannot be used.
    #[error("route {pattern:?}: {reason}")]
    Presence { pattern: String, reason: String },
}

/// The configured routes, tried in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    routes: Vec<Route>,
    /// Per route, its parsed presence tracking (`None`: not tracked).
    presence: Vec<Option<PresenceSpec>>,
}

impl Router {
    /// Checks every pattern; routes are tried in the order given.
    pub fn new(routes: Vec<Route>) -> Result<Self, RouteError> {
        for route in &routes {
            let body = route.pattern.strip_suffix('*').unwrap_or(&route.pattern);
            if body.contains('*') {
                return Err(RouteError::MisplacedWildcard {
                    pattern: route.pattern.clone(),
                });
            }
        }
        let presence = routes.iter().map(presence_spec).collect::<Result<_, _>>()?;
        Ok(Router { routes, presence })
    }

    /// The embedded default: `rooms:*` joinable by anyone, pushes broadcast — the Phoenix
    /// chat example, which the official client demos and the seed's Tsung scenario use.
    pub fn default_routes() -> Self {
        Router {
            routes: vec![Route::new("rooms:*", OnPush::Broadcast)],
            presence: vec![None],
        }
    }

    /// The first route matching `topic`, or `None` (the join is refused with
    /// "unmatched topic").
    pub fn route(&self, topic: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(topic))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The presence tracking of the route matching `topic`, if that route tracks presence.
    pub fn presence(&self, topic: &str) -> Option<&PresenceSpec> {
        let i = self.routes.iter().position(|route| route.matches(topic))?;
        self.presence[i].as_ref()
    }

    /// Whether any route tracks presence.
    pub fn tracks_presence(&self) -> bool {
        self.presence.iter().any(Option::is_some)
    }

    /// Whether any route tracks presence with a claim (connections then keep those claims).
    pub fn presence_claims(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for spec in self.presence.iter().flatten() {
            if let KeySource::Claim(n) = &spec.key {
                names.push(n);
            }
            for f in spec.meta.iter().filter(|f| f.source == FieldSource::Claim) {
                names.push(&f.name);
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, OnPush)]) -> Router {
        Router::new(routes.iter().map(|(p, o)| Route::new(*p, *o)).collect()).unwrap()
    }

    #[test]
    fn default_routes_accept_rooms_only() {
        let r = Router::default_routes();
        let lobby = r.route("rooms:lobby").unwrap();
        assert_eq!(lobby.pattern, "rooms:*");
        assert_eq!(lobby.on_push, OnPush::Broadcast);
        assert!(
            r.route("rooms:").is_some(),
            "the prefix alone matches, as in Phoenix"
        );
        assert!(r.route("rooms").is_none());
        assert!(r.route("room:lobby").is_none());
        assert!(r.route("nope:1").is_none());
        assert!(r.route("").is_none());
        assert!(r.route("phoenix").is_none());
    }

    #[test]
    fn exact_pattern_matches_only_itself() {
        let r = router(&[("system", OnPush::Reject)]);
        assert_eq!(r.route("system").unwrap().on_push, OnPush::Reject);
        assert!(r.route("system:1").is_none());
        assert!(r.route("syste").is_none());
    }

    #[test]
    fn star_alone_matches_everything() {
        let r = router(&[("*", OnPush::Reject)]);
        for topic in ["", "phoenix", "a:b:c", "rooms:*"] {
            assert_eq!(r.route(topic).unwrap().pattern, "*", "{topic:?}");
        }
    }

    #[test]
    fn first_match_wins_in_configuration_order() {
        let r = router(&[
            ("rooms:admin", OnPush::Reject),
            ("rooms:*", OnPush::Broadcast),
            ("rooms:lobby", OnPush::Reject),
        ]);
        assert_eq!(r.route("rooms:admin").unwrap().on_push, OnPush::Reject);
        // The exact route after the wildcard is shadowed, as a later Phoenix clause would be.
        assert_eq!(r.route("rooms:lobby").unwrap().on_push, OnPush::Broadcast);
        assert_eq!(r.routes().len(), 3);
    }

    #[test]
    fn misplaced_wildcards_are_configuration_errors() {
        for bad in ["rooms:*:x", "**", "*a", "a*b*"] {
            assert_eq!(
                Router::new(vec![Route::new(bad, OnPush::Broadcast)]),
                Err(RouteError::MisplacedWildcard {
                    pattern: bad.to_owned()
                }),
            );
        }
        assert_eq!(
            RouteError::MisplacedWildcard {
                pattern: "a*b".into()
            }
            .to_string(),
            "route \"a*b\": a '*' may only be the last character"
        );
        assert!(Router::new(vec![]).unwrap().route("x").is_none());
    }

    #[test]
    fn presence_routes_parse_their_key_and_meta() {
        let mut tracked = Route::new("rooms:*", OnPush::Broadcast);
        tracked.presence = true;
        tracked.presence_key = Some("claim:sub".into());
        tracked.presence_meta = vec!["claim:name".into(), "param:status".into()];
        let r = Router::new(vec![tracked.clone(), Route::new("news:*", OnPush::Reject)]).unwrap();
        let spec = r.presence("rooms:1").unwrap();
        assert_eq!(spec.key, KeySource::Claim("sub".into()));
        assert_eq!(spec.meta.len(), 2);
        assert!(spec.uses_claims() && spec.uses_params());
        assert!(r.presence("news:1").is_none());
        assert!(r.presence("other").is_none());
        assert_eq!(r.presence_claims(), vec!["name", "sub"]);
        let mut conn = tracked.clone();
        conn.presence_key = None;
        conn.presence_meta = vec![];
        let r = Router::new(vec![conn]).unwrap();
        assert_eq!(r.presence("rooms:x").unwrap().key, KeySource::Conn);
        assert!(!r.presence("rooms:x").unwrap().uses_claims());
        for (key, meta) in [
            (Some("header:x"), vec![]),
            (None, vec!["status".to_string()]),
            (None, vec!["param:a".to_string(), "claim:a".to_string()]),
            (None, vec!["param:phx_ref".to_string()]),
        ] {
            let mut bad = tracked.clone();
            bad.presence_key = key.map(Into::into);
            bad.presence_meta = meta;
            assert!(matches!(
                Router::new(vec![bad]),
                Err(RouteError::Presence { .. })
            ));
        }
    }
}
