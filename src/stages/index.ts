/** The stage API, pipeline descriptions, and the built-in is_prime stages. */
export {
  defineStage,
  makeReply,
  HttpRequest,
  NextOutcome,
  Reply,
  type StageDefinition,
  type StageContext,
  type StageEvents,
  type StageOutcome,
  type ReplyBody,
  type ReplyInit,
} from './stage.js';
export {
  definePipeline,
  validatePipeline,
  loadPipelineFile,
  importStage,
  prepareStage,
  isPrimePipeline,
  resolveModule,
  BUILTIN_STAGES,
  type PipelineDescription,
  type PipelineStage,
  type WorkerTransport,
  type TypedStage,
  type PreparedStage,
} from './pipeline.js';
export { parsePossiblePrime, MAX_POSSIBLE_PRIME } from './is-prime/parse.js';
export { isPrime } from './is-prime/check.js';

