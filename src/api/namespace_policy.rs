//! The namespace policy values (label `kataconfiguration.openshift.io/policy` and
//! `spec.namespacePolicy.default`): one enum for the CRD schema, the spec check, the webhooks
//! and the CSV.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespacePolicy {
    Require,
    Default,
    Allow,
    Deny,
}

impl NamespacePolicy {
    /// Every value, in the order the docs and messages list them.
    pub const ALL: [NamespacePolicy; 4] = [
        NamespacePolicy::Require,
        NamespacePolicy::Default,
        NamespacePolicy::Allow,
        NamespacePolicy::Deny,
    ];

    /// The label and spec values, in [`NamespacePolicy::ALL`] order.
    pub const VALUES: [&'static str; 4] = ["require", "default", "allow", "deny"];

    pub fn parse(value: &str) -> Option<NamespacePolicy> {
        Self::ALL.into_iter().find(|p| p.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NamespacePolicy::Require => "require",
            NamespacePolicy::Default => "default",
            NamespacePolicy::Allow => "allow",
            NamespacePolicy::Deny => "deny",
        }
    }

    /// Whether pods without a `runtimeClassName` get kata injected.
    pub fn injects(self) -> bool {
        matches!(self, NamespacePolicy::Require | NamespacePolicy::Default)
    }

    /// `require, default, allow, deny`, for messages naming the valid values.
    pub fn valid_values() -> String {
        Self::VALUES.join(", ")
    }
}

impl fmt::Display for NamespacePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_order() {
        for (p, v) in NamespacePolicy::ALL
            .into_iter()
            .zip(NamespacePolicy::VALUES)
        {
            assert_eq!(p.as_str(), v);
            assert_eq!(NamespacePolicy::parse(v), Some(p));
        }
        assert_eq!(NamespacePolicy::parse("Require"), None);
        assert_eq!(
            NamespacePolicy::valid_values(),
            "require, default, allow, deny"
        );
    }
}
