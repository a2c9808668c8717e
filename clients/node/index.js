// @ts-check
/**
 * Client for rlservice: ask for LLM capacity before a provider call (acquire), report what the
 * call really used afterwards (release).
 * @module rlclient
 */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

/** The proto in this repository, found relative to this file rather than the working directory. */
export const DEFAULT_PROTO_PATH = fileURLToPath(
  new URL('../../protos/ratelimit/v1/ratelimit.proto', import.meta.url),
);

/** gRPC status codes, as carried by {@link RateLimitError#code}. */
export const Status = grpc.status;

/** How the provider call that a lease covered ended. */
export const Outcome = Object.freeze({
  SUCCESS: 'SUCCESS',
  FAILED_WITH_USAGE: 'FAILED_WITH_USAGE',
  FAILED_UNKNOWN_USAGE: 'FAILED_UNKNOWN_USAGE',
  /** The provider refused the call (HTTP 429): nothing is charged unless usage says so. */
  RATE_LIMITED: 'RATE_LIMITED',
});

/** The fields of {@link ProviderFeedback}, in the order of the proto. */
const FEEDBACK_FIELDS = /** @type {const} */ ([
  'retryAfterMs',
  'remainingTokens',
  'remainingRequests',
  'remainingInputTokens',
  'remainingOutputTokens',
]);

/**
 * @typedef {'SUCCESS' | 'FAILED_WITH_USAGE' | 'FAILED_UNKNOWN_USAGE' | 'RATE_LIMITED'} OutcomeName
 *
 * @typedef {object} Usage What the provider reported for the call.
 * @property {number} [inputTokens]
 * @property {number} [outputTokens]
 * @property {number} [cachedTokens]
 * @property {number} [requestCount] Defaults to 1.
 *
 * @typedef {object} ProviderFeedback What the provider's answer said about the key (all
 *   non-negative integers; leave out what the answer did not say).
 * @property {number} [retryAfterMs] retry-after of a 429: pauses the model on every instance.
 * @property {number} [remainingTokens] What the provider says is left of the key's tokens.
 * @property {number} [remainingRequests] What the provider says is left of the key's requests.
 * @property {number} [remainingInputTokens] For providers that count input tokens apart.
 * @property {number} [remainingOutputTokens] For providers that count output tokens apart.
 *
 * @typedef {object} Lease A granted Acquire.
 * @property {string} leaseId
 * @property {string} modelId The model granted, as the service names it (`openai/gpt-5.2`).
 * @property {string} providerModel The same as its provider names it (`gpt-5.2`): see
 *   {@link providerModel}.
 * @property {string[]} modelsTried In order, the granted one last.
 * @property {{tokens: number, requests: number}} reserved The job type's estimate, held until release.
 * @property {number} waitedMs
 * @property {number} expiresAtMs Epoch milliseconds.
 * @property {string} instanceId
 * @property {string} jobType
 * @property {string} jobId
 *
 * @typedef {object} ReleaseResult
 * @property {number} refundedTokens
 * @property {number} refundedRequests
 * @property {number} overageTokens
 * @property {number} overageRequests
 * @property {boolean} sameWindow Refunds apply only when released in the windows acquired in.
 * @property {number} costUsd
 * @property {number} pausedUntilMs When the release paused its model: until then (epoch ms); else 0.
 * @property {number} externalTokens Tokens the provider's remaining showed used elsewhere, charged
 *   to the window by this release.
 * @property {number} externalRequests The same for requests.
 *
 * @typedef {object} ReleaseOptions
 * @property {OutcomeName} [outcome] Defaults to SUCCESS with usage, FAILED_UNKNOWN_USAGE without.
 * @property {Usage} [usage] Needed for SUCCESS and FAILED_WITH_USAGE; optional for RATE_LIMITED.
 * @property {ProviderFeedback} [provider] What the provider's answer said about the key.
 *
 * @typedef {object} AcquireOptions
 * @property {string[]} [models] Escalation order; omitted: the service's configured order.
 * @property {string} [jobId] Idempotency key; a random UUID when omitted.
 * @property {number} [timeoutMs] Caps the whole wait, retries included.
 * @property {number} [leaseTtlMs] Lease lifetime; omitted: the service's default.
 *
 * @typedef {object} RetryPolicy Backoff for the calls that are safe to repeat.
 * @property {number} maxAttempts Counts the first call too.
 * @property {number} initialBackoffMs
 * @property {number} maxBackoffMs
 * @property {number} multiplier
 *
 * @typedef {object} ClientOptions
 * @property {string} [protoPath] Where ratelimit.proto lives; needed when this package is used
 *   outside the repository.
 * @property {grpc.ChannelCredentials} [credentials] Defaults to plaintext; see also `tls`.
 * @property {TlsOptions} [tls] TLS instead of plaintext (not with `credentials`).
 * @property {string} [token] Sent as `authorization: Bearer <token>` with every call.
 * @property {Partial<RetryPolicy>} [retry]
 * @property {number} [rpcTimeoutMs] Bounds Release, ExtendLease and GetAllocation. Default 10 000.
 * @property {grpc.ChannelOptions} [channelOptions]
 *
 * @typedef {object} TlsOptions PEM contents, e.g. `fs.readFileSync('ca.pem')`.
 * @property {Buffer} [ca] The CA to trust; omitted: the system's roots.
 * @property {Buffer} [cert] Client certificate, for a server that requires one (mutual TLS).
 * @property {Buffer} [key] The client certificate's private key.
 *
 * @typedef {object} LeaseOutcome What a withLease callback resolves to.
 * @property {Usage} [usage] Omitted: the usage is unknown and the estimate stays committed.
 * @property {OutcomeName} [outcome] Defaults to SUCCESS when usage is given.
 * @property {ProviderFeedback} [provider] Sent with the release.
 * @property {unknown} [value] Handed back by withLease.
 *
 * @typedef {object} WithLeaseHooks
 * @property {(err: unknown) => ReleaseOptions | undefined} [onError] When the callback throws: how
 *   to release (e.g. `releaseFromError` of `rlclient/openai`); undefined falls back to the rule of
 *   withLease. Its own exceptions are caught: the lease is then released as FAILED_UNKNOWN_USAGE.
 *
 * @typedef {AcquireOptions & WithLeaseHooks} WithLeaseOptions
 */

/** @type {RetryPolicy} */
const DEFAULT_RETRY = { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 2000, multiplier: 2 };

/** A call to the rate limiter failed; `code` is the gRPC status, `details` its message. */
export class RateLimitError extends Error {
  /**
   * @param {number} code
   * @param {string} details
   */
  constructor(code, details) {
    super(`${grpc.status[code] ?? code}: ${details}`);
    this.name = 'RateLimitError';
    this.code = code;
    this.details = details;
  }
}

/** @type {Map<string, grpc.GrpcObject>} */
const loaded = new Map();

/** @param {string} protoPath */
function loadPackage(protoPath) {
  let pkg = loaded.get(protoPath);
  if (!pkg) {
    const definition = protoLoader.loadSync(protoPath, {
      keepCase: false,
      // Token counts stay far below 2^53, and plain numbers are what callers compute with.
      longs: Number,
      enums: String,
      defaults: true,
    });
    pkg = grpc.loadPackageDefinition(definition);
    loaded.set(protoPath, pkg);
  }
  return pkg;
}

/**
 * @param {unknown} err
 * @returns {unknown}
 */
function toRateLimitError(err) {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'number') {
    const details = 'details' in err && typeof err.details === 'string' ? err.details : String(err);
    return new RateLimitError(err.code, details);
  }
  return err;
}

/**
 * @param {ClientOptions} options
 * @returns {grpc.ChannelCredentials}
 */
function channelCredentials(options) {
  const { credentials, tls } = options;
  if (credentials && tls) {
    throw new TypeError('give credentials or tls, not both');
  }
  if (!tls) {
    return credentials ?? grpc.credentials.createInsecure();
  }
  if (!tls.cert !== !tls.key) {
    throw new TypeError('tls.cert and tls.key go together: give both or neither');
  }
  return grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

/**
 * @param {string | undefined} token
 * @returns {string | undefined} The authorization header value.
 */
function bearer(token) {
  if (token === undefined) {
    return undefined;
  }
  const trimmed = token.trim();
  // Header values are printable ASCII; a space would be taken for the end of the token.
  if (!/^[\x21-\x7e]+$/.test(trimmed)) {
    throw new TypeError('a token is printable ASCII without spaces');
  }
  return `Bearer ${trimmed}`;
}

/**
 * The ProviderFeedback message, or undefined when there is nothing to say.
 * @param {ProviderFeedback | undefined} provider
 */
function feedbackMessage(provider) {
  if (provider === undefined || provider === null) {
    return undefined;
  }
  /** @type {Record<string, number>} */
  const message = {};
  for (const field of FEEDBACK_FIELDS) {
    const value = provider[field];
    if (value === undefined || value === null) {
      continue;
    }
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new TypeError(`provider.${field} is a non-negative integer, not ${value}`);
    }
    message[field] = value;
  }
  return Object.keys(message).length ? message : undefined;
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {Usage | undefined} usage */
function usageMessage(usage) {
  return {
    requestCount: usage?.requestCount ?? 1,
    inputTokens: usage?.inputTokens ?? 0,
    outputTokens: usage?.outputTokens ?? 0,
    cachedTokens: usage?.cachedTokens ?? 0,
  };
}

/**
 * The provider's name for a service model id: `openai/gpt-5.2` → `gpt-5.2`. Only the first `/`
 * separates the provider (`deepinfra/openai/gpt-oss-20b` → `openai/gpt-oss-20b`); an id without
 * one is returned as it is.
 * @param {string} modelId
 * @returns {string}
 */
export function providerModel(modelId) {
  const slash = modelId.indexOf('/');
  return slash >= 0 && slash < modelId.length - 1 ? modelId.slice(slash + 1) : modelId;
}

/**
 * How withLease releases after its callback threw `err`.
 * @param {unknown} err
 * @param {WithLeaseHooks['onError']} onError
 * @returns {ReleaseOptions}
 */
function releaseAfterError(err, onError) {
  if (onError) {
    try {
      const chosen = onError(err);
      if (chosen) {
        return chosen;
      }
    } catch (hookErr) {
      process.emitWarning(`withLease onError threw, releasing as FAILED_UNKNOWN_USAGE: ${hookErr}`);
      return { outcome: Outcome.FAILED_UNKNOWN_USAGE };
    }
  }
  const usage = err && typeof err === 'object' && 'usage' in err ? /** @type {Usage} */ (err.usage) : undefined;
  return { outcome: usage ? Outcome.FAILED_WITH_USAGE : Outcome.FAILED_UNKNOWN_USAGE, usage };
}

export class RateLimitClient {
  /**
   * @param {string} address host:port of an rlservice instance or rlproxy.
   * @param {ClientOptions} [options]
   */
  constructor(address, options = {}) {
    const pkg = /** @type {any} */ (loadPackage(options.protoPath ?? DEFAULT_PROTO_PATH));
    /** @type {grpc.Client & Record<string, Function>} */
    this.stub = new pkg.ratelimit.v1.RateLimiter(address, channelCredentials(options), options.channelOptions);
    this.authorization = bearer(options.token);
    /** @type {RetryPolicy} */
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.rpcTimeoutMs = options.rpcTimeoutMs ?? 10_000;
  }

  close() {
    this.stub.close();
  }

  /**
   * Waits for capacity and returns the lease. UNAVAILABLE is retried with the same job id, which
   * the service answers with the same lease.
   * @param {string} jobType
   * @param {AcquireOptions} [options]
   * @returns {Promise<Lease>}
   */
  async acquire(jobType, options = {}) {
    const jobId = options.jobId ?? randomUUID();
    const request = {
      jobId,
      jobType,
      models: options.models ?? [],
      leaseTtlMs: options.leaseTtlMs ?? 0,
    };
    const res = await this.#call('Acquire', request, options.timeoutMs, this.retry);
    return {
      leaseId: res.leaseId,
      modelId: res.modelId,
      providerModel: providerModel(res.modelId),
      modelsTried: res.modelsTried,
      reserved: { tokens: res.reserved?.tokens ?? 0, requests: res.reserved?.requests ?? 0 },
      waitedMs: res.waitedMs,
      expiresAtMs: res.leaseExpiresAtMs,
      instanceId: res.instanceId,
      jobType,
      jobId,
    };
  }

  /**
   * Reports how the call went. Releasing twice returns the first answer; UNAVAILABLE is retried.
   * @param {string} leaseId
   * @param {ReleaseOptions} [options] The outcome defaults to SUCCESS with usage,
   *   FAILED_UNKNOWN_USAGE without. RATE_LIMITED without usage charges nothing.
   * @returns {Promise<ReleaseResult>}
   */
  async release(leaseId, options = {}) {
    const outcome = options.outcome ?? (options.usage ? Outcome.SUCCESS : Outcome.FAILED_UNKNOWN_USAGE);
    const needsUsage = outcome === Outcome.SUCCESS || outcome === Outcome.FAILED_WITH_USAGE;
    if (needsUsage && !options.usage) {
      throw new TypeError(`${outcome} needs the usage the provider reported`);
    }
    const sendsUsage = needsUsage || (outcome === Outcome.RATE_LIMITED && options.usage !== undefined);
    const request = {
      leaseId,
      outcome,
      actual: sendsUsage ? usageMessage(options.usage) : undefined,
      provider: feedbackMessage(options.provider),
    };
    const res = await this.#call('Release', request, this.rpcTimeoutMs, this.retry);
    return {
      refundedTokens: res.refundedTokens,
      refundedRequests: res.refundedRequests,
      overageTokens: res.overageTokens,
      overageRequests: res.overageRequests,
      sameWindow: res.sameWindow,
      costUsd: res.costUsd,
      pausedUntilMs: res.pausedUntilMs ?? 0,
      externalTokens: res.externalTokens ?? 0,
      externalRequests: res.externalRequests ?? 0,
    };
  }

  /**
   * Pushes a lease's expiry to `ttlMs` from now, for long jobs.
   * @param {string} leaseId
   * @param {number} ttlMs
   * @returns {Promise<number>} The new expiry, epoch milliseconds.
   */
  async extendLease(leaseId, ttlMs) {
    const res = await this.#call('ExtendLease', { leaseId, ttlMs }, this.rpcTimeoutMs);
    return res.leaseExpiresAtMs;
  }

  /**
   * The pools and job-type state of one instance, as the proto's GetAllocationResponse in camelCase.
   * @param {string} [instanceId] Through rlproxy: the instance to ask; omitted: any.
   * @returns {Promise<any>}
   */
  getAllocation(instanceId = '') {
    return this.#call('GetAllocation', { instanceId }, this.rpcTimeoutMs);
  }

  /**
   * Follows one instance's allocation: yields a GetAllocationResponse (camelCase) at once, then
   * again whenever its pools, ratios, in-flight or waiting counts change, at most one per
   * `minIntervalMs` (0: the service's 200). Stop with `break`; `timeoutMs` ends the iteration
   * quietly. A slow consumer gets the latest state, never a backlog.
   * @param {{instanceId?: string, minIntervalMs?: number, timeoutMs?: number}} [options]
   *   instanceId: through rlproxy, the instance to follow; omitted: any.
   * @returns {AsyncGenerator<any, void, undefined>}
   */
  async *watchAllocation(options = {}) {
    /** @type {grpc.CallOptions} */
    const callOptions = options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
    const request = { instanceId: options.instanceId ?? '', minIntervalMs: options.minIntervalMs ?? 0 };
    const call = this.stub.WatchAllocation(request, this.#metadata(), callOptions);
    // Cancelling emits a CANCELLED error nobody is left to read.
    call.on('error', () => {});
    try {
      for await (const state of call) {
        yield state;
      }
    } catch (err) {
      const error = toRateLimitError(err);
      const timedOut = error instanceof RateLimitError && error.code === Status.DEADLINE_EXCEEDED;
      if (options.timeoutMs !== undefined && timedOut) {
        return;
      }
      throw error;
    } finally {
      call.cancel();
    }
  }

  /**
   * Acquires, runs `fn` with the lease, and releases with what `fn` resolves to:
   * `{usage}` → SUCCESS with it (`outcome` and `provider` are passed on too); nothing →
   * FAILED_UNKNOWN_USAGE. When `fn` throws, the lease is released as `options.onError(err)`
   * says, when given and it says something; otherwise as FAILED_WITH_USAGE if the error carries a
   * `usage` property, else FAILED_UNKNOWN_USAGE. The error is rethrown.
   * @param {string} jobType
   * @param {WithLeaseOptions} options
   * @param {(lease: Lease) => Promise<LeaseOutcome | void>} fn
   * @returns {Promise<{value: unknown, lease: Lease, released: ReleaseResult}>}
   */
  async withLease(jobType, options, fn) {
    const { onError, ...acquireOptions } = options ?? {};
    const lease = await this.acquire(jobType, acquireOptions);
    /** @type {LeaseOutcome | undefined} */
    let ended;
    try {
      ended = /** @type {LeaseOutcome | undefined} */ (await fn(lease));
    } catch (err) {
      try {
        await this.release(lease.leaseId, releaseAfterError(err, onError));
      } catch (releaseErr) {
        // The callback's error is the one the caller needs; the lease lapses at its TTL anyway.
        process.emitWarning(`could not release lease ${lease.leaseId} after the callback failed: ${releaseErr}`);
      }
      throw err;
    }
    const released = await this.release(lease.leaseId, {
      outcome: ended?.outcome,
      usage: ended?.usage,
      provider: ended?.provider,
    });
    return { value: ended?.value, lease, released };
  }

  /**
   * @param {string} method
   * @param {object} request
   * @param {number | undefined} timeoutMs
   * @param {RetryPolicy} [retry] Only for calls the service answers the same when repeated.
   * @returns {Promise<any>}
   */
  async #call(method, request, timeoutMs, retry) {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#unary(method, request, deadline);
      } catch (err) {
        const error = toRateLimitError(err);
        if (!retry || !(error instanceof RateLimitError) || error.code !== Status.UNAVAILABLE
            || attempt >= retry.maxAttempts) {
          throw error;
        }
        const ceiling = Math.min(retry.maxBackoffMs, retry.initialBackoffMs * retry.multiplier ** (attempt - 1));
        // At least half the ceiling, so no retry comes straight back; the random rest spreads out
        // clients that failed together.
        const delay = ceiling / 2 + Math.random() * (ceiling / 2);
        if (deadline !== undefined && Date.now() + delay >= deadline) {
          throw error;
        }
        await sleep(delay);
      }
    }
  }

  /** @returns {grpc.Metadata} The token, when the client has one, for every call. */
  #metadata() {
    const metadata = new grpc.Metadata();
    if (this.authorization) {
      metadata.set('authorization', this.authorization);
    }
    return metadata;
  }

  /**
   * @param {string} method
   * @param {object} request
   * @param {number | undefined} deadline
   * @returns {Promise<any>}
   */
  #unary(method, request, deadline) {
    return new Promise((resolve, reject) => {
      /** @type {grpc.CallOptions} */
      const callOptions = deadline === undefined ? {} : { deadline };
      this.stub[method](request, this.#metadata(), callOptions, (/** @type {any} */ err, /** @type {any} */ res) =>
        err ? reject(err) : resolve(res),
      );
    });
  }
}
