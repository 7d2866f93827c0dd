-- Login throttling per account and client address together, registrations per address, addresses an account
-- logged in from, disabled users, and the revocation list the services refresh with the keys.
-- Applied with search_path set to `auth`.

ALTER TABLE users ADD COLUMN disabled_at timestamptz;

-- The old scopes (per account alone, per address alone) are replaced; their counts do not carry over.
DELETE FROM login_failures;
ALTER TABLE login_failures DROP CONSTRAINT login_failures_scope_check;
-- pair: one account from one public address; account: one account from every public address;
-- address: one public address on every account; internal: logins of services and the gateway's own user;
-- register: registrations from one public address.
ALTER TABLE login_failures
    ADD CONSTRAINT login_failures_scope_check CHECK (scope IN ('pair', 'account', 'address', 'internal', 'register'));

-- Where each user logged in successfully: from there a lockout caused elsewhere does not apply.
CREATE TABLE known_addresses (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address text NOT NULL,
    last_login_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, address)
);
CREATE INDEX known_addresses_last_login ON known_addresses (last_login_at);

-- Sessions (refresh families) and users whose access tokens issued up to revoked_at are refused.
-- No foreign key: a deleted user's entry must outlive the user.
CREATE TABLE revocations (
    kind text NOT NULL CHECK (kind IN ('session', 'user')),
    subject_id uuid NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (kind, subject_id)
);
CREATE INDEX revocations_expires ON revocations (expires_at);
