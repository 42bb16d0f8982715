//! istio-iptables capture rules, as istio-init / istio-cni installs them in a pod's namespace.

/// Proxy uid/gid: its own traffic is exempt from capture.
pub const PROXY_UID: u32 = 1337;

/// iptables-restore input for the nat table of a sidecar-injected pod (istio-iptables defaults:
/// inbound to 15006 except 15008/15090/15021/15020, outbound to 15001, proxy and 127.0.0.6 exempt).
pub fn istio_iptables_rules() -> String {
    let uid = PROXY_UID;
    format!(
        "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {uid} -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {uid} -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"
    )
}

/// kube-proxy-style (iptables mode) service DNAT for a node: KUBE-SERVICES -> KUBE-SVC-* ->
/// KUBE-SEP-* -> DNAT to the endpoint. One endpoint per service port here.
pub fn kube_proxy_rules(services: &[(String, std::net::Ipv4Addr, u16, std::net::Ipv4Addr, u16)]) -> String {
    let mut chains = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::from("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for (i, (name, cluster_ip, port, endpoint, target_port)) in services.iter().enumerate() {
        let svc = format!("KUBE-SVC-LAB{i:012}");
        let sep = format!("KUBE-SEP-LAB{i:012}");
        chains.push_str(&format!(":{svc} - [0:0]\n:{sep} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {cluster_ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {port} -j {svc}\n\
             -A {svc} -m comment --comment \"{name} -> {endpoint}:{target_port}\" -j {sep}\n\
             -A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {endpoint}:{target_port}\n"
        ));
    }
    format!("{chains}{rules}COMMIT\n")
}
