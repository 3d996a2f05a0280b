// A model's chat template (tokenizer_config.json's `chat_template`, a Jinja program) rendered with
// @huggingface/jinja, the implementation transformers.js uses, and the special tokens that end a turn.
import { Template } from '@huggingface/jinja';
import { InputError } from '../core/errors.js';
import type { TextTokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** A marker no tokenizer splits oddly and no template produces on its own. */
const SENTINEL = '\u0001llmopt-turn\u0001';

/** tokenizer_config.json's bos_token / eos_token: a string, or an added-token object with `content`. */
function tokenText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string')
    return (value as { content: string }).content;
  return '';
}

export class ChatTemplate {
  private readonly template: Template;
  /** Ids that end an assistant turn (beyond EOS): the special tokens the template writes after a reply. */
  readonly endOfTurnIds: number[];

  constructor(
    source: string,
    private readonly tokenizer: TextTokenizer,
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new InputError(`${tokenizer.path}: chat_template does not parse (${(e as Error).message})`);
    }
    this.endOfTurnIds = this.findEndOfTurn();
  }

  /** The prompt text for `messages`, ending with the assistant's turn opened when `addGenerationPrompt`. */
  render(messages: ChatMessage[], addGenerationPrompt = true): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: tokenText(this.tokenizer.config.bos_token),
        eos_token: tokenText(this.tokenizer.config.eos_token),
        pad_token: tokenText(this.tokenizer.config.pad_token),
        unk_token: tokenText(this.tokenizer.config.unk_token),
      });
    } catch (e) {
      throw new InputError(`chat template of ${this.tokenizer.path}: ${(e as Error).message}`);
    }
  }

  /** Token ids of the rendered conversation (the template writes BOS itself, so none is added). */
  encode(messages: ChatMessage[]): number[] {
    return this.tokenizer.encode(this.render(messages), false);
  }

  /**
   * Renders a user turn and an assistant reply, and takes the special tokens between the end of the reply
   * and whatever follows it (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `</s>` ...).
   */
  private findEndOfTurn(): number[] {
    let text: string;
    try {
      text = this.template.render({
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: SENTINEL },
        ],
        add_generation_prompt: false,
        bos_token: tokenText(this.tokenizer.config.bos_token),
        eos_token: tokenText(this.tokenizer.config.eos_token),
      });
    } catch {
      return []; // a template that refuses this conversation shape: EOS alone ends a reply
    }
    const at = text.lastIndexOf(SENTINEL);
    if (at < 0) return [];
    const after = text.slice(at + SENTINEL.length);
    const ids: number[] = [];
    for (const [content, id] of this.tokenizer.specialTokens) if (content.length > 0 && after.includes(content)) ids.push(id);
    return ids;
  }
}

/** The chat template of a tokenizer; a model without one is refused with the reason. */
export function loadChatTemplate(tokenizer: TextTokenizer): ChatTemplate {
  const raw = tokenizer.config.chat_template;
  let source: string | undefined;
  if (typeof raw === 'string') source = raw;
  else if (Array.isArray(raw)) {
    // The named-templates form: [{ name: 'default', template: '...' }, { name: 'tool_use', ... }].
    const named = raw as Array<{ name?: unknown; template?: unknown }>;
    const pick = named.find((t) => t.name === 'default') ?? named[0];
    if (typeof pick?.template === 'string') source = pick.template;
  }
  if (!source)
    throw new InputError(
      `${tokenizer.path.replace(/tokenizer\.json$/, 'tokenizer_config.json')}: no chat_template, so chat is not available ` +
        'for this model (use a plain prompt instead)',
    );
  return new ChatTemplate(source, tokenizer);
}
