// The openai adapter with the real `openai` package, pointed at rlprovider started with
// test/rlprovider.yaml: RL_PROVIDER_PORT=port npm test. With RL_TARGET as well (and RL_CA_FILE,
// RL_CERT_FILE, RL_KEY_FILE, RL_TOKEN as in client.test.js), the calls also run under leases of
// that rlservice, which must limit openai/gpt-5.2 as the default preset does.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { Outcome, RateLimitClient } from '../index.js';
import { releaseFromError, releaseFromResponse } from '../openai.js';

const providerPort = process.env.RL_PROVIDER_PORT;
const target = process.env.RL_TARGET;
const jobType = process.env.RL_JOB_TYPE || 'summary';

// As test/rlprovider.yaml names them.
const MODEL = 'gpt-5.2';
const SERVICE_MODEL = `openai/${MODEL}`;
const ROOMY_KEY = 'sk-node-roomy';
const ONE_A_MINUTE_KEY = 'sk-node-rpm1';
const LEASE_KEY = 'sk-node-lease';
// Above the key's 500 000 tokens a minute: refused at once, whatever the bucket holds.
const TOO_MANY_TOKENS = 600_000;

/** @type {import('openai').OpenAI.ChatCompletionMessageParam[]} */
const messages = [{ role: 'user', content: 'Summarise what a distributed rate limiter does, briefly.' }];

/** @param {string} apiKey */
function sdk(apiKey) {
  return new OpenAI({ baseURL: `http://127.0.0.1:${providerPort}/v1`, apiKey, maxRetries: 0 });
}

/** A warn option that keeps what it was told. */
function collector() {
  /** @type {string[]} */
  const warnings = [];
  return { warnings, warn: (/** @type {string} */ m) => warnings.push(m) };
}

/** @param {string | undefined} path */
const pem = (path) => (path ? readFileSync(path) : undefined);

/** @returns {import('../index.js').ClientOptions} */
function securityOptions() {
  const tls = process.env.RL_CA_FILE
    ? { ca: pem(process.env.RL_CA_FILE), cert: pem(process.env.RL_CERT_FILE), key: pem(process.env.RL_KEY_FILE) }
    : undefined;
  return { tls, token: process.env.RL_TOKEN };
}

/** @param {Headers} headers @param {string} name */
const numberHeader = (headers, name) => {
  const value = headers.get(name);
  assert.ok(value !== null, `no ${name} header`);
  return Number(value);
};

if (!providerPort) {
  test('RL_PROVIDER_PORT names a running rlprovider', () => {
    assert.fail('RL_PROVIDER_PORT is not set: start python -m rlprovider --port 0 --config test/rlprovider.yaml '
      + 'and run RL_PROVIDER_PORT=port npm test');
  });
} else {
  describe(`the openai package against rlprovider on port ${providerPort}`, () => {
    test('a completed call gives SUCCESS, its usage without the cached tokens in the input, and the headers', async () => {
      const { warnings, warn } = collector();
      const answer = await sdk(ROOMY_KEY).chat.completions.create({ model: MODEL, messages, max_tokens: 64 }).withResponse();
      const report = releaseFromResponse(answer, { warn });
      const usage = answer.data.usage;
      assert.ok(usage);
      const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
      assert.ok(cached > 0, 'the key counts part of every prompt as cached');
      assert.deepEqual(report, {
        outcome: Outcome.SUCCESS,
        usage: {
          requestCount: 1,
          inputTokens: usage.prompt_tokens - cached,
          cachedTokens: cached,
          outputTokens: usage.completion_tokens,
        },
        provider: {
          remainingTokens: numberHeader(answer.response.headers, 'x-ratelimit-remaining-tokens'),
          remainingRequests: numberHeader(answer.response.headers, 'x-ratelimit-remaining-requests'),
        },
      });
      assert.ok(report.provider?.remainingRequests !== undefined && report.provider.remainingRequests < 500);
      assert.deepEqual(warnings, []);
    });

    test('a 429 gives RATE_LIMITED, no usage, its retry-after and the remaining headers', async () => {
      const { warnings, warn } = collector();
      const client = sdk(ONE_A_MINUTE_KEY);
      /** @type {unknown} */
      let refused;
      // One request a minute: the second is refused (the first too, when an earlier run used it up).
      for (let i = 0; i < 2 && refused === undefined; i++) {
        await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16 }).withResponse()
          .catch((/** @type {unknown} */ err) => { refused = err; });
      }
      assert.ok(refused instanceof OpenAI.RateLimitError, `refused with ${refused}`);
      assert.equal(refused.status, 429);
      const retryAfterS = numberHeader(refused.headers, 'retry-after');
      assert.ok(retryAfterS >= 1, `retry-after ${retryAfterS}`);
      assert.deepEqual(releaseFromError(refused, { warn }), {
        outcome: Outcome.RATE_LIMITED,
        provider: {
          retryAfterMs: retryAfterS * 1000,
          remainingTokens: numberHeader(refused.headers, 'x-ratelimit-remaining-tokens'),
          remainingRequests: 0,
        },
      });
      assert.deepEqual(warnings, []);
    });

    test('another refusal (404, unknown model) is a failure that used one request and no tokens', async () => {
      const { warn } = collector();
      /** @type {unknown} */
      let refused;
      await sdk(ROOMY_KEY).chat.completions.create({ model: 'no-such-model', messages }).withResponse()
        .catch((/** @type {unknown} */ err) => { refused = err; });
      assert.ok(refused instanceof OpenAI.NotFoundError, `refused with ${refused}`);
      assert.deepEqual(releaseFromError(refused, { warn }), {
        outcome: Outcome.FAILED_WITH_USAGE,
        usage: { requestCount: 1, inputTokens: 0, outputTokens: 0, cachedTokens: 0 },
        provider: {},
      });
    });
  });

  if (target) {
    describe(`openai calls under leases of ${target} (${jobType})`, () => {
      const client = new RateLimitClient(target, securityOptions());
      after(() => client.close());
      const openai = sdk(LEASE_KEY);

      test('withLease with the adapter releases a completed call as SUCCESS with its usage', async () => {
        const { value: completion, lease, released } = await client.withLease(
          jobType,
          { models: [SERVICE_MODEL], timeoutMs: 10_000, onError: releaseFromError },
          async (lease) => {
            const answer = await openai.chat.completions.create({ model: lease.providerModel, messages, max_tokens: 64 })
              .withResponse();
            return { ...releaseFromResponse(answer), value: answer.data };
          },
        );
        assert.equal(lease.modelId, SERVICE_MODEL);
        assert.equal(lease.providerModel, MODEL);
        const usage = /** @type {OpenAI.ChatCompletion} */ (completion).usage;
        assert.ok(usage);
        // The service counts input + cached + output, which is OpenAI's prompt + completion.
        assert.equal(released.refundedTokens, lease.reserved.tokens - (usage.prompt_tokens + usage.completion_tokens));
        assert.equal(released.overageTokens, 0);
        assert.equal(released.pausedUntilMs, 0);
      });

      test('withLease with the adapter releases a 429 as RATE_LIMITED and pauses the model for its retry-after', async () => {
        const before = Date.now();
        /** @type {import('../index.js').Lease | undefined} */
        let seen;
        let retryAfterMs = 0;
        await assert.rejects(
          client.withLease(jobType, { models: [SERVICE_MODEL], timeoutMs: 10_000, onError: releaseFromError }, async (lease) => {
            seen = lease;
            const answer = await openai.chat.completions
              .create({ model: lease.providerModel, messages, max_tokens: TOO_MANY_TOKENS })
              .withResponse();
            return { ...releaseFromResponse(answer), value: answer.data };
          }),
          (err) => {
            assert.ok(err instanceof OpenAI.RateLimitError, `rejected with ${err}`);
            retryAfterMs = numberHeader(err.headers, 'retry-after') * 1000;
            return true;
          },
        );
        assert.ok(seen);
        assert.ok(retryAfterMs >= 1000);
        // Releasing again returns the answer withLease got.
        const released = await client.release(seen.leaseId, { outcome: Outcome.RATE_LIMITED });
        assert.equal(released.refundedTokens, seen.reserved.tokens, 'a refused call is charged nothing');
        assert.ok(released.pausedUntilMs >= before + retryAfterMs - 50,
          `paused until ${released.pausedUntilMs}, retry-after ${retryAfterMs} ms from ${before}`);
        assert.ok(released.pausedUntilMs <= Date.now() + retryAfterMs + 50);
        const allocation = await client.getAllocation();
        assert.ok(allocation.allocation.pools[SERVICE_MODEL].pausedUntilMs >= released.pausedUntilMs);
        // Leaves the instance as it found it for the other suites.
        await sleep(Math.max(0, released.pausedUntilMs - Date.now()) + 50);
      });
    });
  }
}
