// Shared by the serve tests: the built CLI's `llmopt serve` spawned on a free port (port 0, address read from
// its stdout), its RSS, and artifact copies given a chat template (the fixtures themselves stay as they are).
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from '../support.js';

export interface Served {
  url: string;
  proc: ChildProcess;
  /** What the server wrote to stderr so far. */
  stderr: () => string;
  /** Resolves with the exit code once the process is gone. */
  exited: Promise<number | null>;
  /** SIGTERM and wait for the exit code. */
  stop: () => Promise<number | null>;
}

/** Starts `llmopt serve <args> --port 0` and waits for its address line. */
export async function startServer(args: string[]): Promise<Served> {
  const proc = spawn(process.execPath, [join(ROOT, 'bin', 'llmopt.js'), 'serve', ...args, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`llmopt serve exited (${code}) before listening: ${err}`)));
  });
  return {
    url,
    proc,
    stderr: () => err,
    exited,
    stop: async () => {
      proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** Resident set size of a process in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * A copy of artifact `dir` whose tokenizer_config.json carries `template`; `special` adds added tokens marked
 * special (content -> an id the vocabulary already has) to its tokenizer.json.
 */
export function withChatTemplate(dir: string, template: string, special: Record<string, number> = {}): string {
  const copy = join(tempDir('llmopt-chat-'), 'artifact');
  cpSync(dir, copy, { recursive: true });
  const cfgPath = join(copy, 'tokenizer_config.json');
  writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), chat_template: template }));
  if (Object.keys(special).length > 0) {
    const tokPath = join(copy, 'tokenizer.json');
    const tok = JSON.parse(readFileSync(tokPath, 'utf8'));
    for (const [content, id] of Object.entries(special))
      tok.added_tokens.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    writeFileSync(tokPath, JSON.stringify(tok));
  }
  return copy;
}

/** A template whose assistant turns end with <|end|> and whose prompt never contains it. */
export const TURN_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}[assistant] {{ m.content }}<|end|>\n" +
  '{% else %}[{{ m.role }}] {{ m.content }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}';
