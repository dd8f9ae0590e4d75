-- Quality sampling and drift (docs/quality.md).
--
-- artifact_snapshots: the redacted content of artifacts whose agents sent it
-- (run.artifact_written(..., content=...)), so the Validator can re-check proofs and the
-- drift check can compare Implementer outputs. Bounded (131072 characters each), redacted
-- on arrival like every free text, and deleted by retention with the raw events.
CREATE TABLE artifact_snapshots (
    snapshot_id      uuid PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    project_id       text NOT NULL,
    run_id           text NOT NULL,
    playbook         text,
    phase            text NOT NULL,
    role             text NOT NULL,
    artifact_path    text NOT NULL,
    artifact_version integer NOT NULL,
    media_type       text NOT NULL CHECK (media_type IN ('text/html', 'text/markdown', 'application/json', 'text/plain')),
    content          text NOT NULL CHECK (length(content) <= 131072),
    features         jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, project_id, artifact_path, artifact_version)
);
CREATE INDEX artifact_snapshots_outputs ON artifact_snapshots (role, playbook, created_at);
CREATE INDEX artifact_snapshots_created ON artifact_snapshots (created_at);

-- One row per sampled proof and day: what the Validator said in strict mode.
CREATE TABLE quality_samples (
    sample_date      date NOT NULL,
    proof_id         text NOT NULL,
    playbook         text NOT NULL,
    tenant_id        text NOT NULL,
    project_id       text NOT NULL,
    artifact_path    text NOT NULL,
    artifact_version integer NOT NULL,
    status           text NOT NULL CHECK (status IN ('pass', 'fail', 'error')),
    reason           text NOT NULL DEFAULT '',
    validator        text NOT NULL,
    checked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sample_date, proof_id)
);
CREATE INDEX quality_samples_playbook ON quality_samples (playbook, sample_date);

-- One row per playbook and day: the sample's size and failure rate, and whether it froze.
CREATE TABLE quality_sample_runs (
    sample_date      date NOT NULL,
    playbook         text NOT NULL,
    proofs           integer NOT NULL,
    eligible         integer NOT NULL,
    sampled          integer NOT NULL,
    failed           integer NOT NULL,
    errors           integer NOT NULL,
    failure_rate     double precision,
    threshold        double precision NOT NULL,
    froze            boolean NOT NULL DEFAULT false,
    ran_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sample_date, playbook)
);

-- One row per check day, playbook and feature: the two-sample test and its verdict after
-- the multiple-comparison correction across every playbook and feature of that check.
CREATE TABLE quality_drift (
    check_date       date NOT NULL,
    playbook         text NOT NULL,
    feature          text NOT NULL,
    kind             text NOT NULL,
    test             text NOT NULL CHECK (test IN ('ks', 'fisher')),
    baseline_n       integer NOT NULL,
    today_n          integer NOT NULL,
    baseline_value   double precision NOT NULL,
    today_value      double precision NOT NULL,
    statistic        double precision NOT NULL,
    p_value          double precision NOT NULL,
    adjusted_p       double precision NOT NULL,
    drifted          boolean NOT NULL,
    summary          text NOT NULL,
    checked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (check_date, playbook, feature)
);

-- When each quality job (sample, drift) last finished, even on a day with nothing to check:
-- the exporter's runledger_quality_last_run_timestamp_seconds and QualityChecksNotRunning.
CREATE TABLE quality_job_runs (
    job              text PRIMARY KEY CHECK (job IN ('sample', 'drift')),
    day              date NOT NULL,
    ran_at           timestamptz NOT NULL DEFAULT now()
);

-- What froze a Publisher (the sample's numbers) and why an admin lifted it.
ALTER TABLE publisher_freezes
    ADD COLUMN sample_date  date,
    ADD COLUMN sampled      integer,
    ADD COLUMN failed       integer,
    ADD COLUMN failure_rate double precision,
    ADD COLUMN threshold    double precision,
    ADD COLUMN lift_reason  text;
