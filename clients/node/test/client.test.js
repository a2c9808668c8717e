// Runs against a real rlservice: RL_TARGET=host:port [RL_JOB_TYPE=summary] npm test
// With TLS: RL_CA_FILE (and RL_CERT_FILE, RL_KEY_FILE for mutual TLS); with a token: RL_TOKEN.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { Outcome, RateLimitClient, RateLimitError, Status } from '../index.js';

const target = process.env.RL_TARGET;
const jobType = process.env.RL_JOB_TYPE || 'summary';
const token = process.env.RL_TOKEN;

/** @param {string | undefined} path */
const pem = (path) => (path ? readFileSync(path) : undefined);

/** @returns {import('../index.js').ClientOptions} */
function securityOptions() {
  const tls = process.env.RL_CA_FILE
    ? { ca: pem(process.env.RL_CA_FILE), cert: pem(process.env.RL_CERT_FILE), key: pem(process.env.RL_KEY_FILE) }
    : undefined;
  return { tls, token };
}

if (!target) {
  test('RL_TARGET names a running rlservice', () => {
    assert.fail('RL_TARGET is not set: start rlservice and run RL_TARGET=host:port npm test');
  });
} else {
  describe(`rlclient against ${target} (${jobType})`, () => {
    const client = new RateLimitClient(target, securityOptions());
    after(() => client.close());

    if (token) {
      test('a call without the token is UNAUTHENTICATED and says what to send', async () => {
        const anonymous = new RateLimitClient(target, { ...securityOptions(), token: undefined });
        try {
          await assert.rejects(anonymous.getAllocation(), (err) => {
            assert.ok(err instanceof RateLimitError);
            assert.equal(err.code, Status.UNAUTHENTICATED);
            assert.match(err.details, /authorization: Bearer <token>/);
            return true;
          });
        } finally {
          anonymous.close();
        }
      });
    }
    test('watchAllocation sends the state at once and again after a change', async () => {
      const states = client.watchAllocation({ minIntervalMs: 50, timeoutMs: 10_000 });
      const first = await states.next();
      assert.equal(first.done, false);
      const before = first.value.jobTypes[jobType].inFlight;
      const lease = await client.acquire(jobType, { timeoutMs: 10_000 });
      let seen = before;
      for await (const state of states) {
        seen = state.jobTypes[jobType].inFlight;
        if (seen === before + 1) break;
      }
      assert.equal(seen, before + 1);
      await client.release(lease.leaseId, { usage: { inputTokens: 1 } });
      await assert.rejects(
        client.watchAllocation({ minIntervalMs: 10 }).next(),
        (err) => err instanceof RateLimitError && err.code === Status.INVALID_ARGUMENT
          && /min_interval_ms/.test(err.details),
      );
    });

    test('acquire then release with usage refunds the unused estimate', async () => {
      const lease = await client.acquire(jobType, { timeoutMs: 10_000 });
      assert.ok(lease.leaseId);
      assert.equal(lease.modelsTried.at(-1), lease.modelId);
      assert.ok(lease.reserved.tokens > 100, `reserved ${lease.reserved.tokens} tokens`);
      assert.ok(lease.expiresAtMs > Date.now() - 60_000);
      const usage = { inputTokens: 60, outputTokens: 30, cachedTokens: 10 };
      const released = await client.release(lease.leaseId, { outcome: Outcome.SUCCESS, usage });
      assert.equal(released.sameWindow, true);
      assert.equal(released.refundedTokens, lease.reserved.tokens - 100);
      assert.equal(released.overageTokens, 0);
      assert.ok(released.costUsd >= 0);
    });

    test('releasing twice returns the first answer', async () => {
      const lease = await client.acquire(jobType, { timeoutMs: 10_000 });
      const usage = { inputTokens: 10 };
      const first = await client.release(lease.leaseId, { usage });
      const second = await client.release(lease.leaseId, { usage: { inputTokens: 999 } });
      assert.deepEqual(second, first);
    });

    test('withLease releases with the usage the callback returns', async () => {
      const { value, lease, released } = await client.withLease(jobType, { timeoutMs: 10_000 }, async (l) => ({
        usage: { inputTokens: 40, outputTokens: 10 },
        value: `called ${l.modelId}`,
      }));
      assert.equal(value, `called ${lease.modelId}`);
      assert.equal(released.refundedTokens, lease.reserved.tokens - 50);
    });

    test('withLease releases a failed callback as unknown usage and rethrows', async () => {
      /** @type {import('../index.js').Lease | undefined} */
      let seen;
      await assert.rejects(
        client.withLease(jobType, { timeoutMs: 10_000 }, async (l) => {
          seen = l;
          throw new Error('provider down');
        }),
        /provider down/,
      );
      assert.ok(seen);
      const again = await client.release(seen.leaseId, { outcome: Outcome.FAILED_UNKNOWN_USAGE });
      assert.equal(again.refundedTokens, 0);
    });

    test('acquire is idempotent by job id while the lease is open', async () => {
      const jobId = `node-${randomUUID()}`;
      const first = await client.acquire(jobType, { jobId, timeoutMs: 10_000 });
      const second = await client.acquire(jobType, { jobId, timeoutMs: 10_000 });
      assert.equal(second.leaseId, first.leaseId);
      await client.release(first.leaseId, { usage: { inputTokens: 1 } });
    });

    test('an explicit escalation order is honoured', async () => {
      const allocation = await client.getAllocation();
      const models = Object.keys(allocation.allocation.pools);
      assert.ok(models.length > 0, 'the instance reports no pools');
      const wanted = models[models.length - 1];
      const lease = await client.acquire(jobType, { models: [wanted], timeoutMs: 10_000 });
      assert.equal(lease.modelId, wanted);
      assert.deepEqual(lease.modelsTried, [wanted]);
      await client.release(lease.leaseId, { usage: { inputTokens: 1 } });
    });

    test('extendLease pushes the expiry out', async () => {
      const lease = await client.acquire(jobType, { leaseTtlMs: 5_000, timeoutMs: 10_000 });
      const expiresAtMs = await client.extendLease(lease.leaseId, 120_000);
      assert.ok(expiresAtMs > lease.expiresAtMs, `${expiresAtMs} <= ${lease.expiresAtMs}`);
      await client.release(lease.leaseId, { usage: { inputTokens: 1 } });
    });

    test('an unknown job type is INVALID_ARGUMENT', async () => {
      await assert.rejects(client.acquire(`no-such-type-${randomUUID()}`, { timeoutMs: 10_000 }), (err) => {
        assert.ok(err instanceof RateLimitError);
        assert.equal(err.code, Status.INVALID_ARGUMENT);
        assert.ok(err.details.length > 0);
        return true;
      });
    });

    test('releasing an unknown lease is NOT_FOUND', async () => {
      await assert.rejects(client.release(`no-such-lease-${randomUUID()}`, { usage: { inputTokens: 1 } }), (err) => {
        assert.ok(err instanceof RateLimitError);
        assert.equal(err.code, Status.NOT_FOUND);
        return true;
      });
    });
  });
}
