//! One replay run from start to end: the lease, the sweeps (one per network, each from its cursor
//! within its share of the run), and the pages of the open index they read, item by item. What
//! replay does with each record is in the parent module; the rules for shares, cursors and the
//! lease are in `progress.rs`.

use std::time::{Duration, Instant};

use super::{
    gauges, lease_until, next_cursor, record_share, time_share, Action, Replayer, Summary,
    SweepEnd, OTHER_SWEEP, STOP_BEFORE_DEADLINE,
};
use crate::{
    clock::now_ms,
    store::{IndexPosition, Lease, OpenEntry, OpenFilter, PaymentRecord, StoreError, Undecodable},
};

/// Index pages are at most this long (DynamoDB caps a page at 1 MB anyway).
const PAGE: usize = 100;

/// One run's bounds, or one sweep's share of them.
#[derive(Debug, Clone)]
struct Run {
    /// Records changed after this (unix ms) belong to the live path.
    changed_by: u64,
    attempt: String,
    stop_at: Option<Instant>,
    /// The most records to look at.
    max_records: usize,
}

impl Run {
    fn out_of_time(&self) -> bool {
        self.stop_at.is_some_and(|at| Instant::now() >= at)
    }
}

impl Replayer {
    /// One run, unless another run holds the replay lease: then it returns at once with
    /// `skipped` and logs who holds it. Each sweep (items of no configured network, then each
    /// network) goes on from its cursor with an equal share of the time and the records left
    /// ([`time_share`], [`record_share`]). The run's time ends, if a `deadline` (the Lambda's own)
    /// is given, a margin before it ([`STOP_BEFORE_DEADLINE`], or a quarter of the time left if
    /// that is less). Fails only when the lease or the index cannot be read; a record that cannot
    /// be handled now is counted in `errors` and left for the next run.
    pub async fn run(&self, deadline: Option<Instant>) -> Result<Summary, StoreError> {
        let started = now_ms();
        // Names this run's lease, and its queue messages so SQS deduplication does not swallow
        // them; random, so that two runs started in the same millisecond differ.
        let attempt = format!("replay-{started}-{}", crate::store::random_hex());
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let until = lease_until(started, left);
        if let Lease::Held { holder, until } = self
            .store
            .take_replay_lease(&attempt, until, started)
            .await?
        {
            tracing::warn!(%holder, until, "another replay run holds the lease until then; this one does nothing");
            return Ok(Summary {
                skipped: true,
                ..Summary::default()
            });
        }
        let outcome = self.run_leased(started, &attempt, deadline).await;
        match self.store.release_replay_lease(&attempt, now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the replay lease ran out during the run; another run took it")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot give the replay lease back; the next run waits until it ends")
            }
        }
        outcome
    }

    /// The run itself, under the lease.
    async fn run_leased(
        &self,
        started: u64,
        attempt: &str,
        deadline: Option<Instant>,
    ) -> Result<Summary, StoreError> {
        let stop_at = deadline.map(|d| {
            let margin = STOP_BEFORE_DEADLINE.min(d.saturating_duration_since(Instant::now()) / 4);
            d.checked_sub(margin).unwrap_or(d)
        });
        let run = Run {
            changed_by: started.saturating_sub(
                u64::try_from(self.tunables.min_age.as_millis()).unwrap_or(u64::MAX),
            ),
            attempt: attempt.to_owned(),
            stop_at,
            max_records: self.tunables.max_records,
        };
        let balances = gauges::report_operational(&self.facilitator, &self.store).await;
        super::activation::activate_funded(
            &self.store,
            &self.lanes,
            &balances,
            self.tunables.activation_wei,
        )
        .await;
        let mut summary = Summary::default();
        let networks: Vec<String> = self
            .facilitator
            .networks()
            .iter()
            .map(|scheme| scheme.network().caip2().to_owned())
            .collect();
        // `other` first: it is nearly always empty, and the time it leaves passes on to the networks.
        let mut sweeps = vec![(OTHER_SWEEP, OpenFilter::NoneOf(&networks))];
        sweeps.extend(
            networks
                .iter()
                .map(|n| (n.as_str(), OpenFilter::Network(n))),
        );
        for (i, (name, filter)) in sweeps.iter().enumerate() {
            let share = share(&run, summary.examined as usize, sweeps.len() - i);
            self.sweep(name, filter, &share, &mut summary).await?;
        }
        // The gauge read at the start found the open record changed longest ago; a record bumped
        // or re-sent again and again changes often but may have been open longer: the alarm takes
        // the larger of the two (its statistic is the maximum).
        if let Some(created_at) = summary.oldest_open_created_at {
            crate::metrics::oldest_open_payment(Duration::from_millis(
                now_ms().saturating_sub(created_at),
            ));
        }
        summary.log(now_ms().saturating_sub(started));
        Ok(summary)
    }

    /// One sweep: the open items `filter` selects, from where the sweep `name` stopped last
    /// (its cursor) until the end of the index or of `share`; then its cursor moves on
    /// ([`next_cursor`]). Fails only when the index or the cursor cannot be read.
    async fn sweep(
        &self,
        name: &str,
        filter: &OpenFilter<'_>,
        share: &Run,
        summary: &mut Summary,
    ) -> Result<(), StoreError> {
        let from = self.store.replay_cursor(name).await?;
        let mut at = from.clone();
        let mut examined = 0;
        let end = loop {
            let left = share.max_records.saturating_sub(examined);
            if left == 0 || share.out_of_time() {
                break SweepEnd::Stopped { after: at };
            }
            let limit = i32::try_from(left.min(PAGE)).unwrap_or(1);
            let page = self
                .store
                .open_records(share.changed_by, filter, limit, at.as_ref())
                .await?;
            let looked = self.replay_page(page.entries, share, summary).await;
            examined += looked.count;
            at = looked.last.or(at);
            if !looked.all {
                break SweepEnd::Stopped { after: at };
            }
            match page.next {
                Some(next) => at = Some(next),
                None => break SweepEnd::Reached,
            }
        };
        summary.more |= end != SweepEnd::Reached;
        let next = next_cursor(from.clone(), end);
        if next != from {
            // Not saved: the next run looks at the same items again, which changes nothing.
            if let Err(e) = self
                .store
                .save_replay_cursor(name, next.as_ref(), now_ms())
                .await
            {
                tracing::warn!(sweep = name, error = %e, "cannot save where replay stopped");
            }
        }
        Ok(())
    }

    /// One page of the index, item by item, while the sweep's time lasts.
    async fn replay_page(
        &self,
        entries: Vec<OpenEntry>,
        run: &Run,
        summary: &mut Summary,
    ) -> Looked {
        let mut looked = Looked {
            all: true,
            count: 0,
            last: None,
        };
        for entry in entries {
            if run.out_of_time() {
                looked.all = false;
                break;
            }
            looked.count += 1;
            looked.last = Some(entry.position());
            summary.examined += 1;
            match entry {
                OpenEntry::Record(indexed) => self.replay_indexed(*indexed, run, summary).await,
                OpenEntry::Undecodable(item) => {
                    quarantine(&item);
                    summary.quarantined += 1;
                }
            }
        }
        looked
    }

    /// One record as the index listed it.
    async fn replay_indexed(&self, indexed: PaymentRecord, run: &Run, summary: &mut Summary) {
        let (id, created_at) = (indexed.id.clone(), indexed.created_at);
        let action = self.replay_one(indexed, &run.attempt).await;
        if action.leaves_open() {
            summary.oldest_open_created_at = Some(
                summary
                    .oldest_open_created_at
                    .map_or(created_at, |oldest| oldest.min(created_at)),
            );
        }
        if !matches!(action, Action::Pending | Action::MovedOn) {
            tracing::info!(%id, action = action.as_str(), "replayed");
        }
        summary.count(action);
    }
}

/// What one page of a sweep looked at.
#[derive(Debug)]
struct Looked {
    /// Every item of the page (false: the sweep's time ran out first).
    all: bool,
    count: usize,
    /// Where the last item looked at is in the index.
    last: Option<IndexPosition>,
}

/// The next sweep's share of what `run` has left after `examined` records ([`time_share`],
/// [`record_share`]); `sweeps_left` counts that sweep.
fn share(run: &Run, examined: usize, sweeps_left: usize) -> Run {
    let now = Instant::now();
    Run {
        stop_at: run
            .stop_at
            .map(|at| now + time_share(at.saturating_duration_since(now), sweeps_left)),
        max_records: record_share(run.max_records.saturating_sub(examined), sweeps_left),
        ..run.clone()
    }
}

/// An item replay cannot read is skipped, every pass, and never written: what it should be is
/// for an operator to say (docs/runbook.md "replay quarantined"). It stays in the index, so it
/// is reported again on every pass until it is mended or taken out.
fn quarantine(item: &Undecodable) {
    tracing::error!(
        id = %item.id,
        updated_at = item.updated_at,
        problem = %item.problem,
        "replay quarantined an item it cannot decode: skipped until it is mended (docs/runbook.md#replay-quarantined)"
    );
}
