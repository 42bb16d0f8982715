//! Keeping the classifiers in step with the watched namespace's interfaces: a new interface
//! gets both classifiers, a vanished one gives its links back (closing their fds), and after a
//! lost notification (the monitor socket overflowed) a full listing says what changed.

use std::collections::BTreeMap;

use aya::Ebpf;
use tracing::{info, warn};

use super::{
    attach::{attach_interface_here, carries_classifiers, detach_interface, AttachError, Attached},
    netlink::{Link, LinkChange},
    netns::NetnsTarget,
};

/// The changes that turn `known` (ifindex -> name, what observer attached to) into `listed`
/// (a full link dump): `Deleted` for every known interface that is gone or now has another
/// name (an ifindex reused, a rename), then `New` for every listed one not known under its name.
/// Loopback is never attached to.
pub fn reconcile(known: &BTreeMap<u32, String>, listed: &[Link]) -> Vec<LinkChange> {
    let listed: BTreeMap<u32, &Link> = listed.iter().filter(|l| l.name != "lo").map(|l| (l.index, l)).collect();
    let mut changes: Vec<LinkChange> = known
        .iter()
        .filter(|(index, name)| listed.get(index).is_none_or(|l| &l.name != *name))
        .map(|(index, name)| LinkChange::Deleted { index: *index, name: name.clone() })
        .collect();
    changes.extend(
        listed
            .values()
            .filter(|l| known.get(&l.index).is_none_or(|name| *name != l.name))
            .map(|l| LinkChange::New((*l).clone())),
    );
    changes
}

/// Applies link changes to `attached`: new interfaces get the classifiers (entering `netns` on
/// this thread; a new bridge is only named, see [`carries_classifiers`]), deleted ones are
/// detached and forgotten. Returns whether anything changed.
///
/// Errors: entering the namespace, or an attach that failed while its interface still exists.
pub fn apply(
    ebpf: &mut Ebpf,
    netns: &NetnsTarget,
    attached: &mut Attached,
    changes: Vec<LinkChange>,
) -> Result<bool, AttachError> {
    let mut changed = false;
    for change in changes {
        match change {
            LinkChange::New(link) if link.name != "lo" => {
                let Link { index, ref name, .. } = link;
                if attached.interfaces.get(&index) == Some(name) {
                    continue;
                }
                forget(ebpf, attached, index);
                if !carries_classifiers(&link) {
                    info!(iface = %name, ifindex = index, "new bridge: named, no classifiers (its ports carry them)");
                    if let Err(err) = netns.run_inside(|| super::tc_orphans::remove_here(name)) {
                        warn!(iface = %name, "looking for filters a stopped observer left on the bridge: {err}");
                    }
                    attached.interfaces.insert(index, link.name);
                    changed = true;
                    continue;
                }
                let name = link.name;
                let links =
                    netns.run_inside(|| attach_interface_here(ebpf, &name, &netns.name, attached.tc_mode))??;
                if links.is_empty() {
                    continue;
                }
                info!(iface = %name, ifindex = index, "new interface: classifiers attached");
                attached.interfaces.insert(index, name);
                attached.tc_links.insert(index, links);
                changed = true;
            }
            LinkChange::Deleted { index, name } => {
                let carried = attached.tc_links.contains_key(&index);
                if forget(ebpf, attached, index) {
                    let what = if carried { "interface removed: classifiers detached" } else { "bridge removed" };
                    info!(iface = %name, ifindex = index, "{what}");
                    changed = true;
                }
            }
            LinkChange::New(_) => {}
        }
    }
    Ok(changed)
}

/// Detaches and forgets what observer held on interface `index`; whether it knew it.
fn forget(ebpf: &mut Ebpf, attached: &mut Attached, index: u32) -> bool {
    let name = attached.interfaces.remove(&index);
    if let Some(links) = attached.tc_links.remove(&index) {
        detach_interface(ebpf, name.as_deref().unwrap_or_default(), links);
    }
    name.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some("veth".into()),
            peer_index: None,
            link_netnsid: None,
            mtu: None,
            master: None,
            hw_type: 1,
        }
    }

    #[test]
    fn a_relisting_yields_removals_then_additions() {
        let known =
            BTreeMap::from([(2, "eth0".to_string()), (5, "veth-gone".to_string()), (7, "veth-old".to_string())]);
        let listed = [link(1, "lo"), link(2, "eth0"), link(7, "veth-new"), link(9, "veth9")];
        assert_eq!(
            reconcile(&known, &listed),
            vec![
                LinkChange::Deleted { index: 5, name: "veth-gone".into() },
                LinkChange::Deleted { index: 7, name: "veth-old".into() },
                LinkChange::New(link(7, "veth-new")),
                LinkChange::New(link(9, "veth9")),
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_in_step() {
        let known = BTreeMap::from([(2, "eth0".to_string())]);
        assert!(reconcile(&known, &[link(1, "lo"), link(2, "eth0")]).is_empty());
        assert!(reconcile(&BTreeMap::new(), &[link(1, "lo")]).is_empty());
    }

    #[test]
    fn an_empty_listing_removes_everything() {
        let known = BTreeMap::from([(2, "eth0".to_string()), (3, "eth1".to_string())]);
        assert_eq!(reconcile(&known, &[]).len(), 2);
    }
}
