/** One sample of the Prometheus text format: `name{label="value",…} value`. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Every sample of a text exposition (comments skipped; label values unescaped). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) throw new Error(`not a Prometheus sample: ${line}`);
    const [, name = "", labelText = "", value = ""] = match;
    const labels: Record<string, string> = {};
    for (const [, label = "", raw = ""] of labelText.matchAll(LABEL)) {
      labels[label] = raw.replace(/\\(.)/g, (_, char: string) => (char === "n" ? "\n" : char));
    }
    samples.push({ name, labels, value: Number(value) });
  }
  return samples;
}

/** The samples named `name`, each as its label set and value, for `toEqual` on the whole family. */
export function family(samples: Sample[], name: string): { labels: Record<string, string>; value: number }[] {
  return samples.filter((sample) => sample.name === name).map(({ labels, value }) => ({ labels, value }));
}

/** The value of the sample with exactly these labels; undefined when there is none. */
export function sampleValue(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const wanted = JSON.stringify(Object.entries(labels).sort());
  return samples.find(
    (sample) => sample.name === name && JSON.stringify(Object.entries(sample.labels).sort()) === wanted,
  )?.value;
}
