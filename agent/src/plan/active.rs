//! What this host must program: its local endpoints, each with the policies that select it
//! in each direction (in `order`), and so the policies and profiles that are active here —
//! Felix's active-rules calculation. Nothing else gets a chain.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use datastore::model::{PolicyType, Rule as CalicoRule};
use datastore::selector::Selector;

use super::index::Scope;
use super::rules::Direction;
use super::{PlanWarning, Planner};
use crate::nft::ir::IfName;

/// A network policy or global network policy, seen the same way.
#[derive(Debug)]
pub struct PolicyView<'m> {
    /// `ns/name`, or `name` for a global policy: messages and the order tiebreak.
    pub id: String,
    /// `ns.name`, or `name`: the readable part of the chain names.
    pub chain_body: String,
    pub namespace: Option<&'m str>,
    pub order: Option<f64>,
    /// Whom it applies to (`None`: nobody, it cannot be evaluated here).
    pub selector: Option<Selector>,
    pub ingress: &'m [CalicoRule],
    pub egress: &'m [CalicoRule],
    pub types: Vec<PolicyType>,
}

impl<'m> PolicyView<'m> {
    pub fn applies(&self, direction: Direction) -> bool {
        let want = match direction {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        };
        self.types.contains(&want)
    }

    pub fn rules(&self, direction: Direction) -> &'m [CalicoRule] {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    /// Where its rules' selectors look: a namespaced policy sees its own namespace only.
    pub fn scope(&self) -> Scope<'m> {
        self.namespace.map_or(Scope::Cluster, Scope::Namespace)
    }
}

/// Calico's policy order: ascending `order`, policies without one last, then by name.
pub fn policy_order(a: &PolicyView<'_>, b: &PolicyView<'_>) -> Ordering {
    match (a.order, b.order) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.id.cmp(&b.id))
}

/// An endpoint of this host that gets chains.
#[derive(Debug)]
pub struct LocalEndpoint {
    /// Index into [`super::index::Index::endpoints`].
    pub ep: usize,
    pub iface: IfName,
    /// Indices of the policies selecting it, in order, per direction.
    pub ingress: Vec<usize>,
    pub egress: Vec<usize>,
}

impl LocalEndpoint {
    pub fn policies(&self, direction: Direction) -> &[usize] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

impl<'m> Planner<'m> {
    /// Every usable policy of the model, in Calico order.
    pub(super) fn policy_views(&mut self) -> Vec<PolicyView<'m>> {
        let model = self.model;
        let mut views = Vec::new();
        for p in model.policies().values() {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            let id = format!("{ns}/{}", p.metadata.name);
            let mut selector = self.policy_selector(&id, p.spec.selector.as_deref());
            if p.spec.service_account_selector.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                self.warn(
                    &id,
                    "serviceAccountSelector is not supported: policy applies to no endpoint".into(),
                );
                selector = None;
            }
            views.push(PolicyView {
                chain_body: format!("{ns}.{}", p.metadata.name),
                id,
                namespace: Some(ns),
                order: p.spec.order,
                selector,
                ingress: &p.spec.ingress,
                egress: &p.spec.egress,
                types: p.spec.effective_types(),
            });
        }
        for p in model.global_policies().values() {
            let id = p.metadata.name.clone();
            let spec = &p.spec;
            if spec.do_not_track || spec.pre_dnat {
                self.warn(
                    &id,
                    "doNotTrack and preDNAT policies are not supported: policy ignored".into(),
                );
                continue;
            }
            let mut selector = self.policy_selector(&id, spec.selector.as_deref());
            let unsupported = [
                ("namespaceSelector", &spec.namespace_selector),
                ("serviceAccountSelector", &spec.service_account_selector),
            ];
            for (field, value) in unsupported {
                if value.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                    self.warn(
                        &id,
                        format!("{field} is not supported: policy applies to no endpoint"),
                    );
                    selector = None;
                }
            }
            views.push(PolicyView {
                chain_body: id.clone(),
                id,
                namespace: None,
                order: spec.order,
                selector,
                ingress: &spec.ingress,
                egress: &spec.egress,
                types: spec.effective_types(),
            });
        }
        views.sort_by(policy_order);
        views
    }

    fn policy_selector(&mut self, id: &str, text: Option<&str>) -> Option<Selector> {
        match Selector::parse(text.unwrap_or("")) {
            Ok(s) => Some(s),
            Err(e) => {
                self.warn(id, format!("selector: {e}; policy applies to no endpoint"));
                None
            }
        }
    }

    /// The endpoints of this host with an interface, each with its policies; one endpoint
    /// per interface (the first by key wins, the others are reported).
    pub(super) fn local_endpoints(&mut self, policies: &[PolicyView<'m>]) -> Vec<LocalEndpoint> {
        let mut out: Vec<LocalEndpoint> = Vec::new();
        let mut by_iface: HashMap<String, usize> = HashMap::new();
        let nodename = self.host.nodename.as_str();
        for (i, ep) in self.index.endpoints.iter().enumerate() {
            if ep.wep.spec.node.as_deref() != Some(nodename) {
                continue;
            }
            let Some(iface) = ep.wep.spec.interface_name.as_deref() else {
                self.warnings
                    .push(PlanWarning::new(ep.key, "no interfaceName: endpoint not programmed"));
                continue;
            };
            let iface = match IfName::new(iface) {
                Ok(n) => n,
                Err(e) => {
                    self.warnings
                        .push(PlanWarning::new(ep.key, format!("endpoint not programmed: {e}")));
                    continue;
                }
            };
            if let Some(first) = by_iface.get(iface.as_str()) {
                let first_key = self.index.endpoints[out[*first].ep].key.to_string();
                self.warnings.push(PlanWarning::new(
                    ep.key,
                    format!(
                        "interface {iface} already belongs to {first_key}: endpoint not programmed"
                    ),
                ));
                continue;
            }
            let mut local = LocalEndpoint { ep: i, iface, ingress: Vec::new(), egress: Vec::new() };
            for (pi, policy) in policies.iter().enumerate() {
                let Some(selector) = &policy.selector else { continue };
                if policy.namespace.is_some_and(|ns| ns != ep.namespace) {
                    continue;
                }
                if !self.index.selects(selector, ep) {
                    continue;
                }
                if policy.applies(Direction::Ingress) {
                    local.ingress.push(pi);
                }
                if policy.applies(Direction::Egress) {
                    local.egress.push(pi);
                }
            }
            by_iface.insert(local.iface.as_str().to_string(), out.len());
            out.push(local);
        }
        out
    }

    /// The profiles named by local endpoints, in name order.
    pub(super) fn active_profiles(&self, locals: &[LocalEndpoint]) -> BTreeSet<&'m str> {
        locals
            .iter()
            .flat_map(|l| self.index.endpoints[l.ep].wep.spec.profiles.iter())
            .map(String::as_str)
            .collect()
    }
}
