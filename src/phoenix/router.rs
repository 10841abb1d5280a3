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
}

impl Route {
    pub fn new(pattern: impl Into<String>, on_push: OnPush) -> Self {
        Route {
            pattern: pattern.into(),
            on_push,
            require_claim: false,
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
}

/// The configured routes, tried in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    routes: Vec<Route>,
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
        Ok(Router { routes })
    }

    /// The embedded default: `rooms:*` joinable by anyone, pushes broadcast — the Phoenix
    /// chat example, which the official client demos and the seed's Tsung scenario use.
    pub fn default_routes() -> Self {
        Router {
            routes: vec![Route::new("rooms:*", OnPush::Broadcast)],
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
}
