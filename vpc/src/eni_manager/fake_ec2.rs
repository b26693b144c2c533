//! An in-memory EC2 of one instance for the manager's unit tests of what moto cannot do
//! (prefix delegation, see ENVIRONMENT.md). Addresses come from 10.0.0.0/16 in order: /32s
//! from 10.0.0.10 up, /28 prefixes from 10.0.16.0 up; every call is logged.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use crate::ec2::{
    CreateEni, Ec2, Ec2Error, Eni, EniAttachment, EniFilter, EniStatus, Instance, InstanceTypeInfo,
    Operation, PrivateIp, Subnet,
};

#[derive(Debug, Default)]
struct State {
    enis: BTreeMap<String, Eni>,
    next_ip: u32,
    next_prefix: u32,
    next_id: u32,
    calls: Vec<String>,
}

#[derive(Debug)]
pub struct FakeEc2 {
    state: Mutex<State>,
}

pub const INSTANCE: &str = "i-fake";
const SUBNET: &str = "subnet-fake";

fn not_found(operation: Operation, id: &str) -> Ec2Error {
    Ec2Error::NotFound {
        operation,
        input: id.to_string(),
        code: "InvalidNetworkInterfaceID.NotFound".into(),
        message: format!("{id} does not exist"),
    }
}

impl FakeEc2 {
    /// One instance with its primary ENI (address 10.0.0.5, no secondaries).
    pub fn new() -> FakeEc2 {
        let mut s = State {
            next_ip: u32::from(Ipv4Addr::new(10, 0, 0, 10)),
            next_prefix: u32::from(Ipv4Addr::new(10, 0, 16, 0)),
            ..State::default()
        };
        let mut primary = s.new_eni(Ipv4Addr::new(10, 0, 0, 5));
        primary.id = "eni-primary".into();
        primary.status = EniStatus::InUse;
        primary.attachment = Some(EniAttachment {
            id: "attach-primary".into(),
            instance_id: INSTANCE.into(),
            device_index: 0,
            network_card_index: 0,
            delete_on_termination: true,
        });
        s.enis.insert(primary.id.clone(), primary);
        FakeEc2 {
            state: Mutex::new(s),
        }
    }

    /// Every call so far, as `Operation eni-or-input` (the variant name: prefixes and addresses
    /// share an EC2 action).
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The prefixes EC2 has on `eni_id`.
    pub fn prefixes(&self, eni_id: &str) -> Vec<Ipv4Net> {
        let s = self.state.lock().unwrap();
        s.enis
            .get(eni_id)
            .map(|e| e.prefixes.clone())
            .unwrap_or_default()
    }

    fn with<T>(
        &self,
        op: Operation,
        input: &str,
        f: impl FnOnce(&mut State) -> Result<T, Ec2Error>,
    ) -> Result<T, Ec2Error> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("{op:?} {input}"));
        f(&mut s)
    }
}

impl State {
    fn new_eni(&mut self, primary: Ipv4Addr) -> Eni {
        self.next_id += 1;
        Eni {
            id: format!("eni-{}", self.next_id),
            mac: format!("02:00:00:00:00:{:02x}", self.next_id),
            subnet_id: SUBNET.into(),
            vpc_id: "vpc-fake".into(),
            status: EniStatus::Available,
            description: String::new(),
            attachment: None,
            private_ips: vec![PrivateIp {
                address: primary,
                primary: true,
            }],
            prefixes: Vec::new(),
            security_groups: vec!["sg-fake".into()],
            tags: BTreeMap::new(),
        }
    }

    fn ip(&mut self) -> Ipv4Addr {
        self.next_ip += 1;
        Ipv4Addr::from(self.next_ip - 1)
    }

    fn prefix(&mut self) -> Ipv4Net {
        self.next_prefix += 16;
        Ipv4Net::new(Ipv4Addr::from(self.next_prefix - 16), 28).unwrap()
    }

    fn eni(&mut self, op: Operation, id: &str) -> Result<&mut Eni, Ec2Error> {
        self.enis.get_mut(id).ok_or_else(|| not_found(op, id))
    }
}

#[async_trait]
impl Ec2 for FakeEc2 {
    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, Ec2Error> {
        self.with(Operation::DescribeInstance, instance_id, |s| {
            let mut enis: Vec<Eni> = s
                .enis
                .values()
                .filter(|e| e.attachment.is_some())
                .cloned()
                .collect();
            enis.sort_by_key(|e| e.attachment.as_ref().map(|a| a.device_index));
            Ok(Instance {
                id: INSTANCE.into(),
                instance_type: "m5.large".into(),
                subnet_id: SUBNET.into(),
                vpc_id: "vpc-fake".into(),
                primary_eni_id: "eni-primary".into(),
                enis,
            })
        })
    }

    async fn describe_network_interfaces(&self, filter: &EniFilter) -> Result<Vec<Eni>, Ec2Error> {
        self.with(
            Operation::DescribeNetworkInterfaces,
            &format!("{filter:?}"),
            |s| {
                Ok(match filter {
                    EniFilter::Ids(ids) => {
                        ids.iter().filter_map(|i| s.enis.get(i).cloned()).collect()
                    }
                    EniFilter::AvailableInCluster { .. } => s
                        .enis
                        .values()
                        .filter(|e| e.status == EniStatus::Available)
                        .cloned()
                        .collect(),
                })
            },
        )
    }

    async fn create_network_interface(&self, request: &CreateEni) -> Result<Eni, Ec2Error> {
        self.with(Operation::CreateNetworkInterface, &request.subnet_id, |s| {
            let primary = s.ip();
            let mut eni = s.new_eni(primary);
            eni.tags = request.tags.clone();
            match request.secondary {
                crate::ec2::SecondaryAddresses::Ips(n) => {
                    for _ in 0..n {
                        let address = s.ip();
                        eni.private_ips.push(PrivateIp {
                            address,
                            primary: false,
                        });
                    }
                }
                crate::ec2::SecondaryAddresses::Prefixes(n) => {
                    eni.prefixes = (0..n).map(|_| s.prefix()).collect();
                }
            }
            s.enis.insert(eni.id.clone(), eni.clone());
            Ok(eni)
        })
    }

    async fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
    ) -> Result<String, Ec2Error> {
        self.with(Operation::AttachNetworkInterface, eni_id, |s| {
            let e = s.eni(Operation::AttachNetworkInterface, eni_id)?;
            let id = format!("attach-{eni_id}");
            e.status = EniStatus::InUse;
            e.attachment = Some(EniAttachment {
                id: id.clone(),
                instance_id: instance_id.into(),
                device_index,
                network_card_index: 0,
                delete_on_termination: false,
            });
            Ok(id)
        })
    }

    async fn set_delete_on_termination(&self, eni_id: &str, _: &str) -> Result<(), Ec2Error> {
        self.with(Operation::SetDeleteOnTermination, eni_id, |s| {
            let e = s.eni(Operation::SetDeleteOnTermination, eni_id)?;
            if let Some(a) = &mut e.attachment {
                a.delete_on_termination = true;
            }
            Ok(())
        })
    }

    async fn assign_private_ip_addresses(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        self.with(Operation::AssignPrivateIpAddresses, eni_id, |s| {
            let ips: Vec<Ipv4Addr> = (0..count).map(|_| s.ip()).collect();
            let e = s.eni(Operation::AssignPrivateIpAddresses, eni_id)?;
            e.private_ips.extend(ips.iter().map(|&address| PrivateIp {
                address,
                primary: false,
            }));
            Ok(ips)
        })
    }

    async fn assign_ipv4_prefixes(
        &self,
        eni_id: &str,
        count: u32,
    ) -> Result<Vec<Ipv4Net>, Ec2Error> {
        self.with(Operation::AssignIpv4Prefixes, eni_id, |s| {
            let prefixes: Vec<Ipv4Net> = (0..count).map(|_| s.prefix()).collect();
            s.eni(Operation::AssignIpv4Prefixes, eni_id)?
                .prefixes
                .extend(prefixes.iter().copied());
            Ok(prefixes)
        })
    }

    async fn unassign_private_ip_addresses(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
    ) -> Result<(), Ec2Error> {
        self.with(Operation::UnassignPrivateIpAddresses, eni_id, |s| {
            let e = s.eni(Operation::UnassignPrivateIpAddresses, eni_id)?;
            e.private_ips
                .retain(|p| p.primary || !ips.contains(&p.address));
            Ok(())
        })
    }

    async fn unassign_ipv4_prefixes(
        &self,
        eni_id: &str,
        prefixes: &[Ipv4Net],
    ) -> Result<(), Ec2Error> {
        self.with(Operation::UnassignIpv4Prefixes, eni_id, |s| {
            let e = s.eni(Operation::UnassignIpv4Prefixes, eni_id)?;
            e.prefixes.retain(|p| !prefixes.contains(p));
            Ok(())
        })
    }

    async fn detach_network_interface(&self, attachment_id: &str, _: bool) -> Result<(), Ec2Error> {
        self.with(Operation::DetachNetworkInterface, attachment_id, |s| {
            let e = s
                .enis
                .values_mut()
                .find(|e| e.attachment.as_ref().is_some_and(|a| a.id == attachment_id))
                .ok_or_else(|| not_found(Operation::DetachNetworkInterface, attachment_id))?;
            e.attachment = None;
            e.status = EniStatus::Available;
            Ok(())
        })
    }

    async fn delete_network_interface(&self, eni_id: &str) -> Result<(), Ec2Error> {
        self.with(Operation::DeleteNetworkInterface, eni_id, |s| {
            s.enis
                .remove(eni_id)
                .map(|_| ())
                .ok_or_else(|| not_found(Operation::DeleteNetworkInterface, eni_id))
        })
    }

    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet, Ec2Error> {
        self.with(Operation::DescribeSubnet, subnet_id, |_| {
            Ok(Subnet {
                id: subnet_id.into(),
                vpc_id: "vpc-fake".into(),
                cidr: "10.0.0.0/16".parse().unwrap(),
                available_ips: 60000,
                availability_zone: "us-east-1a".into(),
            })
        })
    }

    async fn describe_instance_type(
        &self,
        instance_type: &str,
    ) -> Result<InstanceTypeInfo, Ec2Error> {
        self.with(Operation::DescribeInstanceType, instance_type, |_| {
            Ok(InstanceTypeInfo {
                instance_type: instance_type.into(),
                max_enis: 3,
                ipv4_per_eni: 10,
                vcpus: 2,
                hypervisor: Some("nitro".into()),
                bare_metal: false,
            })
        })
    }
}
