//! Every [`Ec2`] method of [`SdkEc2`] against moto (`moto_server` must be on PATH; the tests
//! fail, saying how to install it, when it is not).
//!
//! moto enforces no limits and has no prefix delegation (see ENVIRONMENT.md), so limit errors
//! are exercised through [`FaultInjecting`] and prefixes only as far as moto answers them.

use trellis_test_support::moto as moto_support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use moto_support::{Fixture, SUBNET2_CIDR, SUBNET_CIDR};
use trellis_vpc::ec2::{
    CreateEni, CredentialSource, Ec2, Ec2Config, Ec2Error, EniFilter, EniStatus, FaultInjecting,
    Operation, SdkEc2, SecondaryAddresses, TAG_CLUSTER_NAME, TAG_CREATED_AT, TAG_INSTANCE_ID,
};
use trellis_vpc::imds::{ImdsClient, ImdsConfig};
use trellis_vpc::imds_server::{metadata_from_ec2, ImdsServer};

fn in_subnet(ip: Ipv4Addr, cidr: &str) -> bool {
    cidr.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip)
}

#[tokio::test]
async fn describe_instance_reads_type_subnet_and_primary_eni() {
    let fx = Fixture::new("m5.large").await;
    let instance = fx
        .ec2
        .describe_instance(&fx.instance_id)
        .await
        .expect("DescribeInstances");
    assert_eq!(instance.instance_type, "m5.large");
    assert_eq!(instance.subnet_id, fx.subnet_id);
    assert_eq!(instance.vpc_id, fx.vpc_id);
    assert_eq!(instance.enis.len(), 1, "{instance:?}");
    let primary = instance.primary_eni().expect("primary ENI among the ENIs");
    assert_eq!(primary.device_index(), Some(0));
    assert_eq!(primary.status, EniStatus::InUse);
    assert!(
        primary.security_groups.contains(&fx.security_group_id),
        "{primary:?}"
    );
    assert!(!primary.mac.is_empty());
    let ip = primary.primary_ip().expect("a primary address");
    assert!(in_subnet(ip, SUBNET_CIDR), "{ip}");
}

#[tokio::test]
async fn eni_lifecycle_create_attach_assign_unassign_detach_delete() {
    let fx = Fixture::new("m5.large").await;
    let groups = vec![fx.security_group_id.clone()];
    let request = CreateEni::for_node(
        &fx.instance_id,
        "lab",
        &fx.subnet2_id,
        &groups,
        SecondaryAddresses::Ips(2),
    );
    let eni = fx
        .ec2
        .create_network_interface(&request)
        .await
        .expect("CreateNetworkInterface");
    assert_eq!(eni.status, EniStatus::Available);
    assert_eq!(eni.subnet_id, fx.subnet2_id);
    assert_eq!(eni.description, format!("aws-K8S-{}", fx.instance_id));
    assert_eq!(eni.tags[TAG_INSTANCE_ID], fx.instance_id);
    assert_eq!(eni.tags[TAG_CLUSTER_NAME], "lab");
    assert!(eni.tags.contains_key(TAG_CREATED_AT));
    assert_eq!(eni.private_ips.len(), 3, "primary + 2 secondaries: {eni:?}");
    assert!(eni
        .private_ips
        .iter()
        .all(|ip| in_subnet(ip.address, SUBNET2_CIDR)));

    let attachment = fx
        .ec2
        .attach_network_interface(&eni.id, &fx.instance_id, 1)
        .await
        .expect("AttachNetworkInterface");
    fx.ec2
        .set_delete_on_termination(&eni.id, &attachment)
        .await
        .expect("ModifyNetworkInterfaceAttribute");
    let instance = fx.ec2.describe_instance(&fx.instance_id).await.unwrap();
    assert_eq!(instance.enis.len(), 2);
    let attached = &instance.enis[1];
    assert_eq!(attached.id, eni.id);
    assert_eq!(attached.device_index(), Some(1));
    assert_eq!(attached.attachment.as_ref().unwrap().id, attachment);

    let before: BTreeSet<Ipv4Addr> = attached.private_ips.iter().map(|ip| ip.address).collect();
    let new = fx
        .ec2
        .assign_private_ip_addresses(&eni.id, 5)
        .await
        .expect("Assign");
    assert_eq!(new.len(), 5, "{new:?}");
    assert!(
        new.iter().all(|ip| !before.contains(ip)),
        "only new addresses: {new:?}"
    );
    let described = &fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(vec![eni.id.clone()]))
        .await
        .unwrap()[0];
    let now: BTreeSet<Ipv4Addr> = described.secondary_ips().into_iter().collect();
    assert!(new.iter().all(|ip| now.contains(ip)), "{new:?} in {now:?}");
    assert_eq!(described.private_ips.len(), 8);

    fx.ec2
        .unassign_private_ip_addresses(&eni.id, &new[..2])
        .await
        .expect("Unassign");
    // moto has no prefixes: unassigning none of them must be accepted and change nothing.
    fx.ec2
        .unassign_ipv4_prefixes(&eni.id, &["10.0.1.16/28".parse().unwrap()])
        .await
        .expect("Unassign prefixes");
    let described = &fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(vec![eni.id.clone()]))
        .await
        .unwrap()[0];
    assert_eq!(described.private_ips.len(), 6);
    assert!(!described.secondary_ips().contains(&new[0]));
    assert!(described.secondary_ips().contains(&new[4]));

    fx.ec2
        .detach_network_interface(&attachment, false)
        .await
        .expect("Detach");
    let detached = &fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(vec![eni.id.clone()]))
        .await
        .unwrap()[0];
    assert_eq!(detached.status, EniStatus::Available);
    assert!(detached.attachment.is_none(), "{detached:?}");
    assert_eq!(fx.attached_eni_ids().await.len(), 1);

    fx.ec2
        .delete_network_interface(&eni.id)
        .await
        .expect("Delete");
    let gone = fx
        .ec2
        .describe_network_interfaces(&EniFilter::Ids(vec![eni.id.clone()]))
        .await
        .unwrap_err();
    assert!(matches!(gone, Ec2Error::NotFound { .. }), "{gone}");
    assert!(gone.to_string().contains(&eni.id), "{gone}");
}

#[tokio::test]
async fn prefix_assignment_without_prefix_support_is_an_error_not_an_empty_answer() {
    let fx = Fixture::new("m5.large").await;
    let instance = fx.ec2.describe_instance(&fx.instance_id).await.unwrap();
    let err = fx
        .ec2
        .assign_ipv4_prefixes(&instance.primary_eni_id, 1)
        .await
        .unwrap_err();
    match &err {
        Ec2Error::Other { code, .. } => assert_eq!(code, "IncompleteAssignment", "{err}"),
        other => panic!("expected IncompleteAssignment, got {other}"),
    }
    assert!(
        err.to_string().contains("asked for 1, EC2 assigned 0"),
        "{err}"
    );
}

#[tokio::test]
async fn leaked_eni_filter_selects_available_enis_of_the_cluster() {
    let fx = Fixture::new("m5.large").await;
    let leaked = fx.create_tagged_eni("lab").await;
    let other_cluster = fx.create_tagged_eni("elsewhere").await;
    let in_use = fx.create_tagged_eni("lab").await;
    fx.ec2
        .attach_network_interface(&in_use, &fx.instance_id, 1)
        .await
        .unwrap();

    let found = fx
        .ec2
        .describe_network_interfaces(&EniFilter::AvailableInCluster {
            cluster_name: "lab".into(),
        })
        .await
        .expect("DescribeNetworkInterfaces by tag and status");
    let ids: Vec<&str> = found.iter().map(|eni| eni.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![leaked.as_str()],
        "not {other_cluster} nor {in_use}"
    );
}

#[tokio::test]
async fn describe_subnet_and_instance_type_numbers() {
    let fx = Fixture::new("m5.large").await;
    let subnet = fx
        .ec2
        .describe_subnet(&fx.subnet2_id)
        .await
        .expect("DescribeSubnets");
    assert_eq!(subnet.cidr.to_string(), SUBNET2_CIDR);
    assert_eq!(subnet.vpc_id, fx.vpc_id);
    assert!(
        subnet.available_ips > 200 && subnet.available_ips <= 256,
        "{subnet:?}"
    );

    let m5 = fx
        .ec2
        .describe_instance_type("m5.large")
        .await
        .expect("DescribeInstanceTypes");
    assert_eq!(
        (m5.max_enis, m5.ipv4_per_eni, m5.vcpus),
        (3, 10, 2),
        "{m5:?}"
    );
    assert_eq!(m5.hypervisor.as_deref(), Some("nitro"));
    assert!(!m5.bare_metal);

    let unknown = fx
        .ec2
        .describe_instance_type("m5.gigantic")
        .await
        .unwrap_err();
    assert!(matches!(unknown, Ec2Error::NotFound { .. }), "{unknown}");
    assert!(unknown.to_string().contains("m5.gigantic"), "{unknown}");
    let no_subnet = fx.ec2.describe_subnet("subnet-00000000").await.unwrap_err();
    assert!(
        matches!(no_subnet, Ec2Error::NotFound { .. }),
        "{no_subnet}"
    );
}

#[tokio::test]
async fn fault_injecting_fails_then_passes_through() {
    let fx = Fixture::new("m5.large").await;
    let eni_id = fx
        .ec2
        .describe_instance(&fx.instance_id)
        .await
        .unwrap()
        .primary_eni_id;
    let ec2 = FaultInjecting::new(fx.ec2.clone());
    let throttled = trellis_vpc::ec2::classify(
        Operation::AssignPrivateIpAddresses,
        &eni_id,
        "RequestLimitExceeded",
        "Request limit exceeded.",
    );
    ec2.fail(Operation::AssignPrivateIpAddresses, throttled.clone(), 2);

    for _ in 0..2 {
        let err = ec2
            .assign_private_ip_addresses(&eni_id, 3)
            .await
            .unwrap_err();
        assert_eq!(err, throttled);
    }
    // The failed calls never reached moto.
    let filter = EniFilter::Ids(vec![eni_id.clone()]);
    assert_eq!(
        ec2.describe_network_interfaces(&filter).await.unwrap()[0]
            .private_ips
            .len(),
        1
    );
    let ips = ec2
        .assign_private_ip_addresses(&eni_id, 3)
        .await
        .expect("third call passes");
    assert_eq!(ips.len(), 3);
    assert_eq!(ec2.calls(Operation::AssignPrivateIpAddresses), 3);
    assert_eq!(ec2.pending(Operation::AssignPrivateIpAddresses), 0);
    assert_eq!(ec2.calls(Operation::DescribeNetworkInterfaces), 1);
}

#[tokio::test]
async fn unknown_ids_are_not_found_naming_the_input() {
    let fx = Fixture::new("m5.large").await;
    let err = fx
        .ec2
        .delete_network_interface("eni-0123456789abcdef0")
        .await
        .unwrap_err();
    match &err {
        Ec2Error::NotFound {
            operation, code, ..
        } => {
            assert_eq!(*operation, Operation::DeleteNetworkInterface);
            assert!(code.ends_with(".NotFound"), "{code}");
        }
        other => panic!("expected NotFound, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("EC2 DeleteNetworkInterface (eni-0123456789abcdef0)"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn metadata_from_ec2_is_served_and_read_back() {
    let fx = Fixture::new("m5.large").await;
    let groups = vec![fx.security_group_id.clone()];
    let request = CreateEni::for_node(
        &fx.instance_id,
        "lab",
        &fx.subnet2_id,
        &groups,
        SecondaryAddresses::Ips(3),
    );
    let eni = fx.ec2.create_network_interface(&request).await.unwrap();
    fx.ec2
        .attach_network_interface(&eni.id, &fx.instance_id, 1)
        .await
        .unwrap();

    let metadata = metadata_from_ec2(
        &fx.ec2,
        &fx.instance_id,
        moto_support::REGION,
        &[fx.vpc_cidr],
    )
    .await
    .expect("metadata from moto");
    assert_eq!(metadata.instance_type, "m5.large");
    assert_eq!(metadata.enis.len(), 2);
    assert_eq!(metadata.enis[1].interface_id, eni.id);
    assert_eq!(metadata.enis[1].subnet_cidr.to_string(), SUBNET2_CIDR);
    assert_eq!(metadata.enis[1].local_ipv4s.len(), 4);
    assert_eq!(metadata.primary_eni().unwrap().device_number, 0);

    let server = ImdsServer::start("127.0.0.1:0".parse().unwrap(), metadata.clone())
        .await
        .unwrap();
    let client = ImdsClient::new(ImdsConfig {
        endpoint: server.endpoint(),
        ..ImdsConfig::default()
    })
    .unwrap();
    assert_eq!(
        client.instance_metadata().await.expect("IMDS read"),
        metadata
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_credential_chain_gives_one_line_no_credentials_error() {
    // Nothing listens on port 9: the call must fail on credentials before any connection.
    let ec2 = SdkEc2::new(&Ec2Config {
        endpoint: Some("http://127.0.0.1:9".into()),
        region: moto_support::REGION.into(),
        credentials: CredentialSource::Empty,
    })
    .await;
    let err = ec2
        .describe_instance("i-0123456789abcdef0")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Ec2Error::NoCredentials {
            operation: Operation::DescribeInstance
        }
    );
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("no AWS credentials"), "{text}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ec2 = SdkEc2::new(&Ec2Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: moto_support::REGION.into(),
        credentials: CredentialSource::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    })
    .await;
    let err = ec2.describe_subnet("subnet-1").await.unwrap_err();
    match &err {
        Ec2Error::Other { code, input, .. } => {
            assert_eq!(code, "Transport", "{err}");
            assert_eq!(input, "subnet-1");
        }
        other => panic!("expected a transport error, got {other}"),
    }
    assert!(!err.to_string().contains('\n'), "{err}");
}
