use std::net::IpAddr;

use super::*;

const LAB: &str = include_str!("../../../observer/tests/fixtures/lab-inventory.json");

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn reads_the_labs_list_and_names_endpoints() {
    let inv = Inventory::from_json(LAB).expect("parse");
    assert_eq!(inv.pods.len(), 5);
    assert_eq!(inv.services.len(), 5);
    assert!(inv.skipped.is_empty());

    let pp = inv.pod_by_ip(ip("10.244.1.10")).expect("productpage");
    assert_eq!(pp.key(), "bookinfo/productpage-v1-7d9f8c6b5-x2k4q");
    assert_eq!(pp.workload, "productpage-v1");
    assert_eq!((pp.role, pp.mesh), (Role::Workload, MeshMode::Sidecar));
    assert_eq!(pp.node.as_deref(), Some("node-a"));
    assert!(pp.ips.contains(&ip("fd00:10:244:1::a")), "dual-stack podIPs");

    let istiod_pod = inv.describe(ip("10.244.2.10"), Some(15012));
    assert_eq!(istiod_pod.pod.as_deref(), Some("istio-system/istiod-6c8d9f7b5-k9v3p"));
    assert_eq!(istiod_pod.service.as_deref(), Some("istio-system/istiod"));
    assert_eq!(istiod_pod.role, Some(Role::Istiod));
    assert_eq!(istiod_pod.istio_port, Some("xds-tls"));

    let istiod_svc = inv.describe(ip("10.96.0.10"), Some(443));
    assert_eq!(istiod_svc.service.as_deref(), Some("istio-system/istiod"));
    assert_eq!(istiod_svc.istio_port, Some("webhook"), "Service port 443 -> 15017");
    assert_eq!(istiod_svc.pod, None);

    let api = inv.describe(ip("10.96.0.1"), Some(443));
    assert_eq!((api.service.as_deref(), api.role), (Some("default/kubernetes"), Some(Role::ApiServer)));
    let api_pod = inv.describe(ip("10.244.2.20"), Some(6443));
    assert_eq!(api_pod.role, Some(Role::ApiServer));
    assert_eq!(api_pod.workload.as_deref(), Some("kube-apiserver-node-b"), "a static pod is its own workload");

    let hbone = inv.describe(ip("10.244.2.11"), Some(15008));
    assert_eq!((hbone.istio_port, hbone.mesh), (Some("hbone"), Some(MeshMode::Sidecar)));
    assert_eq!(inv.describe(ip("10.244.2.11"), Some(9080)).istio_port, None);
    assert_eq!(inv.describe(ip("10.244.9.9"), Some(9080)), Endpoint::default(), "unknown IP: nothing invented");
}

#[test]
fn ambient_namespaces_ztunnel_gateways_and_typed_lists() {
    let text = r#"{"kind":"List","items":[
      {"kind":"Namespace","metadata":{"name":"shop","labels":{"istio.io/dataplane-mode":"ambient"}}},
      {"kind":"Pod","metadata":{"name":"cart-5f6d7c8b9-abcde","namespace":"shop","labels":{"pod-template-hash":"5f6d7c8b9"},
        "ownerReferences":[{"kind":"ReplicaSet","name":"cart-5f6d7c8b9","controller":true}]},
        "spec":{"nodeName":"w1"},"status":{"podIP":"10.1.0.5"}},
      {"kind":"Pod","metadata":{"name":"ztunnel-x1","namespace":"istio-system","labels":{"app":"ztunnel"},
        "ownerReferences":[{"kind":"DaemonSet","name":"ztunnel","controller":true}]},"status":{"podIP":"10.1.0.2"}},
      {"kind":"Pod","metadata":{"name":"eastwest-1","namespace":"istio-system","labels":{"istio":"eastwestgateway"}},
        "spec":{"containers":[{"name":"istio-proxy"}]},"status":{"podIP":"10.1.0.3"}},
      {"kind":"ConfigMap","metadata":{"name":"x"}},
      {"kind":"ConfigMap","metadata":{"name":"y"}}
    ]}"#;
    let inv = Inventory::from_json(text).expect("parse");
    let cart = inv.pod_by_ip(ip("10.1.0.5")).expect("cart");
    assert_eq!((cart.mesh, cart.workload.as_str()), (MeshMode::Ambient, "cart"));
    assert_eq!(inv.describe(ip("10.1.0.5"), Some(15008)).istio_port, Some("hbone"));
    let zt = inv.pod_by_ip(ip("10.1.0.2")).expect("ztunnel");
    assert_eq!((zt.role, zt.workload.as_str()), (Role::Ztunnel, "ztunnel"));
    let gw = inv.describe(ip("10.1.0.3"), Some(15443));
    assert_eq!((gw.role, gw.istio_port), (Some(Role::Gateway), Some("eastwest-mtls")));
    assert_eq!(inv.skipped.get("ConfigMap"), Some(&2));

    let typed =
        r#"{"kind":"PodList","items":[{"metadata":{"name":"a","namespace":"n"},"status":{"podIP":"10.0.0.1"}}]}"#;
    assert_eq!(Inventory::from_json(typed).expect("typed").pods.len(), 1);
    let single = r#"{"kind":"Service","metadata":{"name":"s","namespace":"n"},"spec":{"clusterIP":"None","ports":[{"port":80}]}}"#;
    let inv = Inventory::from_json(single).expect("single");
    assert!(inv.services[0].cluster_ips.is_empty(), "headless");
}

#[test]
fn bad_input_gets_one_clear_error_naming_where() {
    let err = |text: &str| Inventory::from_json(text).expect_err("must fail").to_string();
    assert!(err("{not json").contains("not JSON: key must be a string at line 1 column 2"), "{}", err("{not json"));
    assert!(err(r#"{"items":[]}"#).contains("no `kind`"));
    assert!(err(r#"{"kind":"List"}"#).contains("without an `items` array"));
    let bad_ip = r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p","namespace":"ns"},"status":{"podIP":"10.0.0.999"}}]}"#;
    assert_eq!(err(bad_ip), "items[0] (Pod ns/p): status.podIP: `10.0.0.999` is not an IP address");
    let no_name = r#"{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"ns"}}]}"#;
    assert_eq!(err(no_name), "items[0] (Service ns/): metadata.name: missing");
    let slice = r#"{"kind":"EndpointSlice","metadata":{"name":"x","namespace":"ns"},"endpoints":[]}"#;
    assert!(err(slice).contains("kubernetes.io/service-name"));
    let bad_port = r#"{"kind":"EndpointSlice","metadata":{"name":"x","namespace":"ns","labels":{"kubernetes.io/service-name":"s"}},
        "ports":[{"port":70000}],"endpoints":[{"addresses":["10.0.0.1"]}]}"#;
    assert_eq!(err(bad_port), "items[0] (EndpointSlice ns/x): ports[0].port: 70000 is no port number (1-65535)");
    let text_port = bad_port.replace("70000", "\"http\"");
    assert!(err(&text_port).ends_with("ports[0].port: \"http\" is no port number (1-65535)"), "{}", err(&text_port));
    // No number is all ports (the EndpointSlice API), not an error.
    assert!(Inventory::from_json(&bad_port.replace(r#"{"port":70000}"#, r#"{"name":"any"}"#)).is_ok());
    let in_file = Inventory::from_json(bad_ip).expect_err("fails").in_file(std::path::Path::new("/tmp/inv.json"));
    assert!(in_file.to_string().starts_with("inventory /tmp/inv.json: items[0]"), "{in_file}");
}

#[test]
fn probe_ports_come_from_the_pod_spec_with_named_ports_resolved() {
    let text = r#"{"kind":"List","items":[
      {"kind":"Pod","metadata":{"name":"cart-1","namespace":"shop"},
        "spec":{"containers":[
          {"name":"app","ports":[{"name":"http","containerPort":8080},{"name":"admin","containerPort":9901}],
           "readinessProbe":{"httpGet":{"path":"/ready","port":"http"}},
           "livenessProbe":{"tcpSocket":{"port":9901}},
           "startupProbe":{"exec":{"command":["true"]}}},
          {"name":"side","livenessProbe":{"grpc":{"port":"missing"}}}]},
        "status":{"podIP":"10.1.0.5"}}
    ]}"#;
    let inv = Inventory::from_json(text).expect("parse");
    let cart = inv.pod_by_ip(ip("10.1.0.5")).expect("cart");
    assert_eq!(cart.probe_ports, vec![(8080, "readiness"), (9901, "liveness")]);
    assert_eq!(inv.describe(ip("10.1.0.5"), Some(8080)).probe, Some("readiness"));
    assert_eq!(inv.describe(ip("10.1.0.5"), Some(9901)).probe, Some("liveness"));
    assert_eq!(inv.describe(ip("10.1.0.5"), Some(7000)).probe, None);
}

/// The lab's inventory with `edit` applied to its items (JSON values).
pub(crate) fn lab_with(edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> String {
    let mut list: serde_json::Value = serde_json::from_str(LAB).expect("lab json");
    let items = list.get_mut("items").and_then(serde_json::Value::as_array_mut).expect("items");
    edit(items);
    list.to_string()
}

/// review5's inv4: the API server runs hostNetwork on node IP 172.31.1.2:6443, and Calico's
/// typha serves 5473 on the same IP; its Service and slice come first (`kubectl get -A` sorts
/// by namespace).
pub(crate) fn host_network_apiserver_beside_typha() -> String {
    lab_with(|items| {
        for item in items.iter_mut() {
            let name = item.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
            if name == "kube-apiserver-node-b" {
                item["spec"]["hostNetwork"] = true.into();
                item["status"]["podIP"] = "172.31.1.2".into();
                item["status"]["podIPs"] = serde_json::json!([{"ip": "172.31.1.2"}]);
            }
            if name == "kubernetes-0acf1" {
                item["endpoints"][0]["addresses"] = serde_json::json!(["172.31.1.2"]);
            }
        }
        let typha = serde_json::json!([
            {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "calico-typha", "namespace": "calico-system"},
             "spec": {"clusterIP": "10.96.0.77", "ports": [{"name": "calico-typha", "port": 5473, "targetPort": 5473}]}},
            {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
             "metadata": {"name": "calico-typha-abcde", "namespace": "calico-system",
                          "labels": {"kubernetes.io/service-name": "calico-typha"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["172.31.1.2"]}],
             "ports": [{"name": "calico-typha", "port": 5473, "protocol": "TCP"}]}
        ]);
        for (i, item) in typha.as_array().into_iter().flatten().enumerate() {
            items.insert(i, item.clone());
        }
    })
}

/// review5's inv5: a finished Job pod (phase Succeeded) listed after istiod keeps istiod's
/// current address 10.244.2.10.
pub(crate) fn finished_job_holding_istiods_address() -> String {
    lab_with(|items| {
        items.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-migrate-28911-abcde", "namespace": "zz-jobs", "uid": "0b8f",
                         "ownerReferences": [{"apiVersion": "batch/v1", "controller": true, "kind": "Job", "name": "db-migrate-28911"}]},
            "spec": {"nodeName": "node-b", "containers": [{"name": "m"}]},
            "status": {"phase": "Succeeded", "podIP": "10.244.2.10", "podIPs": [{"ip": "10.244.2.10"}]}
        }));
    })
}

#[test]
fn a_host_network_address_is_named_by_the_service_of_its_port() {
    let inv = Inventory::from_json(&host_network_apiserver_beside_typha()).expect("parse");
    let node = ip("172.31.1.2");
    let api = inv.describe(node, Some(6443));
    assert_eq!((api.service.as_deref(), api.role), (Some("default/kubernetes"), Some(Role::ApiServer)));
    assert_eq!(api.pod, None, "a host-network pod names no address");
    let typha = inv.describe(node, Some(5473));
    assert_eq!((typha.service.as_deref(), typha.role), (Some("calico-system/calico-typha"), None));
    // A port neither serves, or no port: two Services have the address, none is named.
    assert_eq!(inv.describe(node, Some(22)), Endpoint::default());
    assert_eq!(inv.describe(node, None).service, None);
    let kubernetes = inv.services.iter().find(|s| s.is_apiserver()).expect("kubernetes");
    assert!(kubernetes.serves(node, 6443) && !kubernetes.serves(node, 5473));
    // The host-network API server pod as a caller (found by its cgroup) is not calico-typha.
    let apiserver = inv.pods.iter().find(|p| p.name == "kube-apiserver-node-b").expect("pod");
    assert_eq!(inv.describe_pod(apiserver).service, None);
}

#[test]
fn a_slice_without_ports_serves_every_port_and_a_single_service_still_names_its_address() {
    let text = lab_with(|items| {
        for item in items.iter_mut() {
            if item.pointer("/metadata/name").and_then(serde_json::Value::as_str) == Some("kubernetes-0acf1") {
                item.as_object_mut().expect("object").remove("ports");
            }
        }
    });
    let inv = Inventory::from_json(&text).expect("parse");
    let kubernetes = inv.services.iter().find(|s| s.is_apiserver()).expect("kubernetes");
    assert!(kubernetes.serves(ip("10.244.2.20"), 12345));
    // The lab's istiod slice lists 15010/15012/15014/15017; its pod's own sidecar-less port
    // still names the Service it backs (the only one).
    let other = inv.describe(ip("10.244.2.10"), Some(8080));
    assert_eq!(other.service.as_deref(), Some("istio-system/istiod"));
}

#[test]
fn a_finished_pod_never_names_an_address_a_live_pod_holds() {
    let inv = Inventory::from_json(&finished_job_holding_istiods_address()).expect("parse");
    let job = inv.pods.iter().find(|p| p.namespace == "zz-jobs").expect("the job pod is kept");
    assert!(job.finished);
    assert!(!inv.pods.iter().find(|p| p.name.starts_with("istiod")).expect("istiod").finished, "Running");
    let istiod = inv.describe(ip("10.244.2.10"), Some(15012));
    assert_eq!(istiod.pod.as_deref(), Some("istio-system/istiod-6c8d9f7b5-k9v3p"));
    assert_eq!((istiod.role, istiod.istio_port), (Some(Role::Istiod), Some("xds-tls")));
    let via_service = inv.describe(ip("10.96.0.10"), Some(15012));
    assert_eq!(via_service.role, Some(Role::Istiod), "the backing pod is the live one");
    // Alone, a finished pod's address is nobody's.
    let alone = r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"j","namespace":"n"},
        "status":{"phase":"Failed","podIP":"10.1.0.9"}}]}"#;
    let inv = Inventory::from_json(alone).expect("parse");
    assert!(inv.pod_by_ip(ip("10.1.0.9")).is_none());
}
