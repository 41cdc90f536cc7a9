//! get and list (with selectors and `limit`/`continue` pagination).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::FakeApi;
use super::dispatch::Target;
use super::errors::{ApiErr, not_found};
use super::selectors::Filter;

impl FakeApi {
    pub(super) fn do_get(&self, t: &Target) -> Result<(u16, Value), ApiErr> {
        let name = t.name.clone().unwrap_or_default();
        self.state()
            .objects
            .get(&t.key())
            .cloned()
            .map(|o| (200, o))
            .ok_or_else(|| not_found(&t.res, &name))
    }

    pub(super) fn do_list(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
    ) -> Result<(u16, Value), ApiErr> {
        let filter = Filter::from_query(q)?;
        let st = self.state();
        let mut items = st.select_refs(t, &filter);
        // Pagination: the continue token is the last returned "namespace/name".
        if let Some(after) = q.get("continue").filter(|c| !c.is_empty()) {
            items.retain(|(k, _)| format!("{}/{}", k.namespace, k.name) > *after);
        }
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        let mut cont = String::new();
        if let Some(limit) = limit
            && items.len() > limit
        {
            items.truncate(limit);
            if let Some((k, _)) = items.last() {
                cont = format!("{}/{}", k.namespace, k.name);
            }
        }
        Ok((
            200,
            json!({
                "kind": format!("{}List", t.res.kind),
                "apiVersion": t.res.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string(), "continue": cont},
                "items": items.into_iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            }),
        ))
    }
}
