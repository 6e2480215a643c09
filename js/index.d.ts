// Types for hourofci-log (see docs/DESIGN.md, "SDK JavaScript API").

export interface InitOptions {
  /** Required, e.g. "https://check.hourofci.org:4000" (no trailing slash needed). */
  endpoint: string;
  /** true: log to loggingtable_test (paths /test/...). */
  test?: boolean;
  /** Default: lowercase MD5 hex of navigator.userAgent. */
  userAgent?: string;
  /**
   * The pseudonymous learner every event records (a UUID other than the nil UUID; init
   * rejects any other). Default: a random UUID made once per browser profile, kept in
   * localStorage (`hourofci-log:learner:v1`), or one per page where storage is refused.
   */
  learnerId?: string;
  /** Default 1000; over it the oldest events are dropped and counted. */
  maxQueue?: number;
  /** Default 1000. */
  retryBaseMs?: number;
  /** Default 60000. */
  retryCapMs?: number;
  /** Default 100, at most 500. */
  batchSize?: number;
}

/**
 * "sent": the collector stored it. "queued": kept on this device (localStorage), sent later,
 * also from a later visit. "queued-memory": localStorage refused it (full or disabled), so it is
 * kept only while this page stays open, and sent from this page. "rejected": the collector itself
 * judged it can never be stored (invalid, too large, or its id reused with other content).
 */
export type Delivery = "sent" | "queued" | "queued-memory" | "rejected";

export interface StatusEvent {
  kind: "sent" | "queued" | "queued-memory" | "dropped" | "rejected";
  /** Event id (not for "dropped", nor for a batch "sent"). */
  id?: string;
  /** How many (for "dropped" and batch "sent"). */
  count?: number;
  /** For "rejected": the collector's reason. */
  reason?: string;
  /** Queue length after this change (all endpoints' events of this origin). */
  pending: number;
}

/** Loads the wasm once; may be called again to reconfigure. Rejects on bad options, naming the option. */
export function init(options: InitOptions): Promise<void>;
/**
 * Strings go as they are, other values as their JSON text. Called after `init()` but before
 * the wasm has loaded, the answer is written to localStorage at once (in the SDK's stored
 * format) and the promise resolves "queued"; the SDK sends it once loaded, or a later page
 * load does. Before any `init()` there is no endpoint, and it rejects.
 */
export function logAnswer(lesson: string, level: string, question: string, answer: unknown): Promise<Delivery>;
/** For animation widgets: `detail` is stored as its JSON text (early calls as for logAnswer). */
export function logInteraction(lesson: string, level: string, question: string, detail: unknown): Promise<Delivery>;
export function flush(): Promise<{ sent: number; pending: number }>;
export function pending(): number;
/** Returns the unsubscribe function. */
export function onStatus(callback: (e: StatusEvent) => void): () => void;

declare const hourofci: {
  init: typeof init;
  logAnswer: typeof logAnswer;
  logInteraction: typeof logInteraction;
  flush: typeof flush;
  pending: typeof pending;
  onStatus: typeof onStatus;
};
export default hourofci;

declare global {
  interface Window {
    hourofci: typeof hourofci;
  }
}
