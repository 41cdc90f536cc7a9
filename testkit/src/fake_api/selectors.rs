//! `labelSelector` and `fieldSelector` of a list, watch or deletecollection: parsing (equality,
//! `in`/`notin` sets, existence) and matching stored objects against them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::dispatch::Target;
use super::errors::{ApiErr, err};
use super::store::{Key, State};

/// Parsed `labelSelector` / `fieldSelector` requirement.
#[derive(Debug)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_selector(s: &str) -> Result<Vec<Req>, ApiErr> {
    let set = |v: &str| -> Result<Vec<String>, ApiErr> {
        let v = v.trim();
        let inner = v
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(|| {
                err(
                    400,
                    format!("unable to parse requirement: set {v:?} needs parentheses"),
                )
            })?;
        Ok(inner.split(',').map(|x| x.trim().to_string()).collect())
    };
    split_top_level(s)
        .into_iter()
        .map(|part| {
            if let Some((k, v)) = part.split_once(" notin ") {
                Ok(Req::NotIn(k.trim().into(), set(v)?))
            } else if let Some((k, v)) = part.split_once(" in ") {
                Ok(Req::In(k.trim().into(), set(v)?))
            } else if let Some((k, v)) = part.split_once("!=") {
                Ok(Req::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok(Req::Eq(k.trim().into(), v.trim().into()))
            } else if let Some(k) = part.strip_prefix('!') {
                Ok(Req::NotExists(k.trim().into()))
            } else {
                Ok(Req::Exists(part))
            }
        })
        .collect()
}

fn req_matches(reqs: &[Req], get: impl Fn(&str) -> Option<String>) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k).as_deref() == Some(v),
        Req::Ne(k, v) => get(k).as_deref() != Some(v),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

/// Label and field filter of a list or watch.
pub(super) struct Filter {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

impl Filter {
    pub(super) fn from_query(q: &BTreeMap<String, String>) -> Result<Filter, ApiErr> {
        Ok(Filter {
            labels: parse_selector(q.get("labelSelector").map_or("", |s| s))?,
            fields: parse_selector(q.get("fieldSelector").map_or("", |s| s))?,
        })
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        req_matches(&self.labels, |k| labels[k].as_str().map(String::from))
            && req_matches(&self.fields, |path| {
                let v = path.split('.').fold(obj, |v, seg| &v[seg]);
                match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => Some(String::new()),
                    other => Some(other.to_string()),
                }
            })
    }
}

impl State {
    /// The stored objects of the target's resource (and namespace) that match `filter`.
    pub(super) fn select(&self, t: &Target, filter: &Filter) -> Vec<(Key, Value)> {
        self.select_refs(t, filter)
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// [`Self::select`] without copies, so a list page clones only the objects it returns.
    pub(super) fn select_refs(&self, t: &Target, filter: &Filter) -> Vec<(&Key, &Value)> {
        self.objects
            .iter()
            .filter(|(k, v)| {
                k.group == t.res.group
                    && k.version == t.res.version
                    && k.plural == t.res.plural
                    && t.namespace.as_ref().is_none_or(|n| *n == k.namespace)
                    && filter.matches(v)
            })
            .collect()
    }
}
