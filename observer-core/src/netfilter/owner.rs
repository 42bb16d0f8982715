//! Who installed a rule, from its chain, table and comment: kube-proxy, Calico, kube-router,
//! Cilium, istio-iptables, ... and the Kubernetes NetworkPolicy when the CNI writes it down.

/// `(owner, namespace/name of the NetworkPolicy)`.
pub fn owner_of(table: &str, chain: &str, comment: Option<&str>) -> (Option<&'static str>, Option<String>) {
    let comment = comment.unwrap_or_default();
    let owner =
        if chain.starts_with("KUBE-NWPLCY") || chain.starts_with("KUBE-POD-FW") || chain.starts_with("KUBE-ROUTER") {
            Some("kube-router")
        } else if chain.starts_with("KUBE-") || table == "kube-proxy" {
            Some("kube-proxy")
        } else if chain.starts_with("cali-") || comment.starts_with("cali:") || table == "calico" {
            Some("calico")
        } else if chain.starts_with("CILIUM_") || table.starts_with("cilium") {
            Some("cilium")
        } else if chain.starts_with("ISTIO_") {
            Some("istio-iptables")
        } else if chain.starts_with("ANTREA-") || table == "antrea" {
            Some("antrea")
        } else if chain.starts_with("FLANNEL-") {
            Some("flannel")
        } else if chain.starts_with("WEAVE-") {
            Some("weave")
        } else {
            None
        };
    (owner, network_policy(comment))
}

/// The policy a CNI named in a comment: Calico (`Policy ns/knp.default.name ingress`,
/// `policy=ns/name`), kube-router (`... policy name NAME namespace NS`).
fn network_policy(comment: &str) -> Option<String> {
    let words: Vec<&str> = comment.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        if let Some(value) = word.strip_prefix("policy=") {
            return Some(strip_calico_prefix(value));
        }
        if *word == "Policy" {
            if let Some(value) = words.get(i + 1).filter(|v| v.contains('/')) {
                return Some(strip_calico_prefix(value));
            }
        }
        if *word == "name" && words.get(i.wrapping_sub(1)) == Some(&"policy") {
            let name = words.get(i + 1)?;
            let namespace = words.iter().position(|w| *w == "namespace").and_then(|j| words.get(j + 1))?;
            return Some(format!("{namespace}/{name}"));
        }
    }
    None
}

/// Calico names a Kubernetes NetworkPolicy `knp.default.NAME` in its own model.
fn strip_calico_prefix(value: &str) -> String {
    match value.split_once('/') {
        Some((ns, name)) => format!("{ns}/{}", name.strip_prefix("knp.default.").unwrap_or(name)),
        None => value.strip_prefix("knp.default.").unwrap_or(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_owners_and_policies() {
        assert_eq!(owner_of("filter", "KUBE-FORWARD", None), (Some("kube-proxy"), None));
        assert_eq!(
            owner_of("filter", "cali-pi-_abc", Some("cali:Xyz123 policy=default/deny-istiod")),
            (Some("calico"), Some("default/deny-istiod".into()))
        );
        assert_eq!(
            owner_of("filter", "cali-pi-_abc", Some("Policy shop/knp.default.deny-hbone ingress")),
            (Some("calico"), Some("shop/deny-hbone".into()))
        );
        assert_eq!(
            owner_of(
                "filter",
                "KUBE-NWPLCY-ABC",
                Some("rule to ACCEPT traffic from source pods to dest pods selected by policy name deny-all namespace web")
            ),
            (Some("kube-router"), Some("web/deny-all".into()))
        );
        assert_eq!(owner_of("filter", "ISTIO_INBOUND", None).0, Some("istio-iptables"));
        assert_eq!(owner_of("mesh", "forward", Some("block mesh")), (None, None));
    }
}
