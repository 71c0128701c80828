import { randomUUID } from "node:crypto";
import type { Increment } from "./errors.ts";

/** One `increment()` call waiting for the answer to the batch that carries it. */
export interface Call {
  resolve(): void;
  reject(error: Error): void;
}

interface Item extends Increment {
  calls: Call[];
}

/**
 * The batch being filled. Calls for a key already in it are added to its item, so a hot key costs one item
 * however often it is called, as long as the sum stays a safe integer; past that it starts a second item.
 */
export class OpenBatch {
  readonly #items: Item[] = [];
  readonly #byKey = new Map<string, Item>();

  get size(): number {
    return this.#items.length;
  }

  add(key: string, value: number, call: Call): void {
    const item = this.#byKey.get(key);
    if (item !== undefined && Number.isSafeInteger(item.value + value)) {
      item.value += value;
      item.calls.push(call);
      return;
    }
    const added = { key, value, calls: [call] };
    this.#items.push(added);
    this.#byKey.set(key, added);
  }

  /** The batch as it is sent, under a fresh Idempotency-Key that every retry of it repeats. */
  seal(): SealedBatch {
    return new SealedBatch(
      randomUUID(),
      this.#items.map(({ key, value }) => ({ key, value })),
      this.#items.flatMap((item) => item.calls),
    );
  }
}

/** A batch on its way: the same key and body on every attempt, so the service applies it once. */
export class SealedBatch {
  readonly idempotencyKey: string;
  readonly increments: readonly Increment[];
  readonly body: string;
  readonly #calls: Call[];

  constructor(idempotencyKey: string, increments: readonly Increment[], calls: Call[]) {
    this.idempotencyKey = idempotencyKey;
    this.increments = increments;
    this.body = JSON.stringify({ increments });
    this.#calls = calls;
  }

  get calls(): number {
    return this.#calls.length;
  }

  resolve(): void {
    for (const call of this.#calls) call.resolve();
  }

  reject(error: Error): void {
    for (const call of this.#calls) call.reject(error);
  }
}
