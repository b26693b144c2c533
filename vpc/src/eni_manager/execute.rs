//! One step of the pool: the plan's first action, carried out against EC2 and the book.

use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::EniManager;
use crate::address_book::EniInfo;
use crate::ec2::{Ec2Error, EniFilter, EniStatus};
use crate::warm_pool::Release;

/// How long a detached ENI is waited for before its delete is left to the next pass.
const DETACH_WAIT: Duration = Duration::from_secs(10);

fn host(ip: std::net::Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32")
}

impl EniManager {
    /// Plans on the book as it is and carries out one action: grow (assign to an ENI, or
    /// attach a new one), else shrink (release addresses, or delete an ENI) if the last
    /// shrink is `shrink_interval` ago. Whether EC2 was called.
    pub async fn reconcile_once(&self, now: Instant) -> Result<bool, Ec2Error> {
        let plan = self.plan(now);
        if let Some((eni_id, n)) = plan.assign {
            self.assign_to(&eni_id, n).await?;
            return Ok(true);
        }
        if let Some(n) = plan.attach {
            self.attach_new(n).await?;
            return Ok(true);
        }
        if plan.release.is_empty() && plan.delete_eni.is_none() {
            return Ok(false);
        }
        {
            let mut last = self.last_shrink.lock().expect("shrink lock");
            if last.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.shrink_interval) {
                return Ok(false);
            }
            *last = Some(now);
        }
        for r in &plan.release {
            self.give_back(r).await?;
        }
        if let Some(eni_id) = plan.delete_eni {
            self.delete_eni(&eni_id).await?;
        }
        Ok(true)
    }

    /// Assigns `n` addresses (or prefixes) to an attached ENI. When EC2 says the ENI is full
    /// (the book was behind), the book learns what EC2 has instead.
    async fn assign_to(&self, eni_id: &str, n: u32) -> Result<(), Ec2Error> {
        let slots: Result<Vec<Ipv4Net>, Ec2Error> = if self.cfg.targets.prefix_delegation {
            self.ec2.assign_ipv4_prefixes(eni_id, n).await
        } else {
            self.ec2
                .assign_private_ip_addresses(eni_id, n)
                .await
                .map(|ips| ips.into_iter().map(host).collect())
        };
        let slots = match slots {
            Ok(s) => s,
            Err(e @ Ec2Error::IpLimit { .. }) => {
                self.relearn(eni_id).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        tracing::info!(eni = %eni_id, count = slots.len(), "assigned addresses to the ENI");
        let clashes = self
            .book
            .lock()
            .expect("book lock")
            .add_slots(eni_id, &slots)
            .map_err(|e| self.other("book", eni_id, e))?;
        super::warn_clashes(eni_id, &clashes);
        Ok(())
    }

    /// Re-reads one ENI from EC2 into the book.
    async fn relearn(&self, eni_id: &str) -> Result<(), Ec2Error> {
        let enis = self
            .ec2
            .describe_network_interfaces(&EniFilter::Ids(vec![eni_id.to_string()]))
            .await?;
        for eni in &enis {
            self.learn_eni(eni, Instant::now())
                .await
                .map_err(|e| self.other("book", eni_id, e))?;
        }
        Ok(())
    }

    /// Creates an ENI with `n` addresses (or prefixes) at the lowest free device index,
    /// attaches it with DeleteOnTermination, and adds it to the book. An ENI that cannot be
    /// attached is deleted again.
    async fn attach_new(&self, n: u32) -> Result<(), Ec2Error> {
        let device_index = {
            let book = self.book.lock().expect("book lock");
            let used: Vec<u32> = book.enis().iter().map(|e| e.device_index).collect();
            (1..).find(|i| !used.contains(i)).expect("a free index")
        };
        let created = self
            .ec2
            .create_network_interface(&self.create_request(n))
            .await?;
        let attachment = match self
            .ec2
            .attach_network_interface(&created.id, &self.cfg.instance_id, device_index)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                if let Err(d) = self.ec2.delete_network_interface(&created.id).await {
                    tracing::warn!(eni = %created.id, error = %d, "deleting an ENI that could not be attached; the leaked-ENI sweep will");
                }
                return Err(e);
            }
        };
        if let Err(e) = self
            .ec2
            .set_delete_on_termination(&created.id, &attachment)
            .await
        {
            // Attached and usable; only a terminated instance would leave it behind, and the
            // sweep of another node deletes it then.
            tracing::warn!(eni = %created.id, error = %e, "setting DeleteOnTermination");
        }
        let subnet = self
            .subnet_cidr(&created.subnet_id)
            .await
            .map_err(|e| self.other("describe subnet", &created.subnet_id, e))?;
        let mut slots: Vec<Ipv4Net> = created.secondary_ips().into_iter().map(host).collect();
        slots.extend(created.prefixes.iter().copied());
        tracing::info!(eni = %created.id, device_index, addresses = slots.len(), "attached a new ENI");
        let mut book = self.book.lock().expect("book lock");
        book.add_eni(EniInfo {
            id: created.id.clone(),
            device_index,
            attachment_id: Some(attachment),
            primary: false,
            for_pods: true,
            subnet,
            mac: created.mac.clone(),
            primary_ip: created.primary_ip(),
            attached_at: Instant::now(),
        });
        if self.cfg.wait_for_interfaces {
            book.wait_for_interface(&created.id);
        }
        let clashes = book
            .add_slots(&created.id, &slots)
            .map_err(|e| self.other("book", &created.id, e))?;
        super::warn_clashes(&created.id, &clashes);
        Ok(())
    }

    /// Gives free addresses (or prefixes) back. They leave the book first, so no pod gets
    /// one during the call; on failure they return to it.
    async fn give_back(&self, r: &Release) -> Result<(), Ec2Error> {
        let kept = self
            .book
            .lock()
            .expect("book lock")
            .remove_slots(&r.eni_id, &r.cidrs);
        let cidrs: Vec<Ipv4Net> = r
            .cidrs
            .iter()
            .filter(|c| !kept.contains(c))
            .copied()
            .collect();
        if cidrs.is_empty() {
            return Ok(());
        }
        let result = if self.cfg.targets.prefix_delegation {
            self.ec2.unassign_ipv4_prefixes(&r.eni_id, &cidrs).await
        } else {
            let ips: Vec<_> = cidrs.iter().map(|c| c.addr()).collect();
            self.ec2
                .unassign_private_ip_addresses(&r.eni_id, &ips)
                .await
        };
        match result {
            Ok(()) => {
                tracing::info!(eni = %r.eni_id, count = cidrs.len(), "released surplus addresses");
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .book
                    .lock()
                    .expect("book lock")
                    .add_slots(&r.eni_id, &cidrs);
                Err(e)
            }
        }
    }

    /// Detaches and deletes an unused ENI. It leaves the book first (refused if a pod took
    /// one of its addresses since the plan); if the detach fails it returns.
    async fn delete_eni(&self, eni_id: &str) -> Result<(), Ec2Error> {
        let (info, slots) = {
            let mut book = self.book.lock().expect("book lock");
            let Some(info) = book.eni(eni_id).cloned() else {
                return Ok(());
            };
            let slots = book.slots(eni_id);
            if book.remove_eni(eni_id).is_err() {
                return Ok(());
            }
            (info, slots)
        };
        if let Some(attachment) = &info.attachment_id {
            if let Err(e) = self.ec2.detach_network_interface(attachment, false).await {
                let mut book = self.book.lock().expect("book lock");
                book.add_eni(info.clone());
                let _ = book.add_slots(eni_id, &slots);
                return Err(e);
            }
        }
        let deadline = Instant::now() + DETACH_WAIT;
        loop {
            let now = self
                .ec2
                .describe_network_interfaces(&EniFilter::Ids(vec![eni_id.to_string()]))
                .await;
            match now {
                Ok(enis) if enis.iter().all(|e| e.status == EniStatus::Available) => break,
                Err(Ec2Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) if Instant::now() >= deadline => {
                    // Still detaching: the leaked-ENI sweep deletes it once it is available.
                    tracing::warn!(eni = %eni_id, "detached ENI not available yet; left to the sweep");
                    return Ok(());
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        match self.ec2.delete_network_interface(eni_id).await {
            Ok(()) | Err(Ec2Error::NotFound { .. }) => {
                tracing::info!(eni = %eni_id, "deleted an unused ENI");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A book or bookkeeping failure as an [`Ec2Error`] of the step (they do not happen
    /// unless EC2's answers contradict each other).
    fn other(&self, what: &str, input: &str, e: impl std::fmt::Display) -> Ec2Error {
        Ec2Error::Other {
            operation: crate::ec2::Operation::DescribeNetworkInterfaces,
            input: input.to_string(),
            code: "Bookkeeping".into(),
            message: format!("{what}: {e}"),
        }
    }
}
