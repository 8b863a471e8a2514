"""Generates filter/src/core/operations/table.rs: the Bedrock operations the gateway knows by
name (method, path pattern), and every place where a call's input names a model: the path
segment of a URI label, and the JSON key paths of the request body. From botocore's service
models. Run with the project's virtualenv after upgrading botocore:

    .venv/bin/python scripts/dev/gen_operations.py > filter/src/core/operations/table.rs

"Names a model" is decided member by member, by explicit data below: a string member names a
model when its shape (or, for a generic shape, its shape and member name) is in INCLUDED; a
member that looks like a model reference (MODEL_NAMES/MODEL_ARN_PATTERN) and is not included must
be listed in EXCLUDED with the reason. A model-like member that is neither makes this script fail
(and tests/python/test_operations_table.py), so a new botocore's additions get classified by a
person, not by default.
"""

import dataclasses
import re
import sys

import botocore
import botocore.session

SERVICES = ["bedrock-runtime", "bedrock-agent-runtime", "bedrock", "bedrock-agent"]

# The broad net: a string member looks like a model reference when its member name or its shape
# name matches MODEL_NAMES, or its shape's pattern accepts ARNs of model-like resources.
MODEL_NAMES = re.compile(r"model|inferenceprofile|promptrouter", re.IGNORECASE)
MODEL_ARN_PATTERN = re.compile(
    r"foundation-model|custom-model|imported-model|provisioned-model|inference-profile|prompt-router"
)

# String shapes whose value references an existing model, inference profile, provisioned model,
# custom model deployment, imported model or prompt router that the call uses or acts on. A shape
# name is only meaningful within its service; the same name in two services is listed once when
# both mean a model.
INCLUDED_SHAPES = {
    # bedrock-runtime
    "AsyncInvokeIdentifier",  # StartAsyncInvoke modelId
    "ConversationalModelId",  # Converse(Stream) /model/{modelId}
    "FoundationModelVersionIdentifier",  # CountTokens /model/{modelId}
    "InvokeModelIdentifier",  # InvokeModel* /model/{modelId}
    # bedrock-agent-runtime, bedrock, bedrock-agent
    "BedrockModelArn",  # generation, reranking, implicit-filter, parsing, enrichment models
    "BedrockRerankingModelArn",
    "BedrockEmbeddingModelArn",  # knowledge base embedding model
    "ModelIdentifier",  # agents' foundationModel; bedrock: custom models, provisioned throughput
    "OptimizePromptRequestTargetModelIdString",
    "KnowledgeBaseModelIdentifier",  # flow knowledge-base node
    "FlowPromptModelIdentifier",  # flow inline prompt node
    "PromptModelIdentifier",  # prompt variants
    "ProvisionedModelIdentifier",  # agent alias routing to a provisioned model
    # bedrock
    "AdvancedPromptOptimizationModelIdentifier",
    "BaseModelIdentifier",
    "BedrockModelId",  # foundation model agreements and availability
    "CustomModelArn",  # custom model deployments
    "CustomModelDeploymentIdentifier",
    "EvaluationBedrockModelIdentifier",
    "EvaluatorModelIdentifier",
    "ExcludedModelId",  # models exempted from an account-enforced guardrail
    "GetFoundationModelIdentifier",
    "ImportedModelIdentifier",
    "IncludedModelId",  # models an account-enforced guardrail applies to (or "ALL")
    "InferenceProfileIdentifier",
    "InferenceProfileModelSourceArn",
    "ModelArn",  # model copy source
    "ModelId",  # batch inference
    "ModelSourceIdentifier",  # Bedrock Marketplace model (SageMaker hub content ARN)
    "ProvisionedModelId",
    "PromptRouterArn",
    "PromptRouterTargetModelArn",
    "TeacherModelIdentifier",
}
# Generic shapes that name a model only as these members: (shape, member name).
INCLUDED_MEMBERS = {
    # A Bedrock Marketplace endpoint (a SageMaker endpoint ARN) is what InvokeModel and
    # Converse take as modelId for a Marketplace model.
    ("Arn", "endpointArn"),
    ("Arn", "endpointIdentifier"),
}


def _group(reason: str, *keys: str) -> dict:
    return {key: reason for key in keys}


_RERANK_TYPE = "enum choosing the kind of reranking model (BEDROCK_RERANKING_MODEL), not a model id"
_LIST_FILTER = "query-string filter of a List call: selects what to list, uses no model"
_NEW_NAME = "name the caller chooses for the resource the call creates, not an existing model"
_KMS = "KMS key for the new model's encryption"

# Model-like members that do not name a model the call uses or acts on: "service.Operation.path"
# (the JSON key path in the body, arrays transparent; a URI label, query or header member by
# its wire name) -> reason.
EXCLUDED = {
    **_group(
        "JSON-pointer paths of extra response fields to return, not a model",
        "bedrock-runtime.Converse.additionalModelResponseFieldPaths",
        "bedrock-runtime.ConverseStream.additionalModelResponseFieldPaths",
    ),
    **_group(
        _RERANK_TYPE,
        "bedrock-agent-runtime.AgenticRetrieveStream.agenticRetrieveConfiguration.rerankingModelType",
        "bedrock-agent-runtime.InvokeAgent.sessionState.knowledgeBaseConfigurations.retrievalConfiguration.managedSearchConfiguration.rerankingModelType",
        "bedrock-agent-runtime.InvokeInlineAgent.collaborators.knowledgeBases.retrievalConfiguration.managedSearchConfiguration.rerankingModelType",
        "bedrock-agent-runtime.InvokeInlineAgent.knowledgeBases.retrievalConfiguration.managedSearchConfiguration.rerankingModelType",
        "bedrock-agent-runtime.Retrieve.retrievalConfiguration.managedSearchConfiguration.rerankingModelType",
        "bedrock-agent-runtime.RetrieveAndGenerate.retrieveAndGenerateConfiguration.knowledgeBaseConfiguration.retrievalConfiguration.managedSearchConfiguration.rerankingModelType",
        "bedrock-agent-runtime.RetrieveAndGenerateStream.retrieveAndGenerateConfiguration.knowledgeBaseConfiguration.retrievalConfiguration.managedSearchConfiguration.rerankingModelType",
    ),
    **_group(
        "enum choosing which kind of foundation-model configuration follows, not a model id",
        "bedrock-agent-runtime.AgenticRetrieveStream.agenticRetrieveConfiguration.foundationModelConfiguration.type",
        "bedrock-agent-runtime.AgenticRetrieveStream.agenticRetrieveConfiguration.foundationModelType",
    ),
    **_group(
        "enum choosing the kind of embedding model, not a model id",
        "bedrock-agent.CreateKnowledgeBase.knowledgeBaseConfiguration.managedKnowledgeBaseConfiguration.embeddingModelType",
        "bedrock-agent.UpdateKnowledgeBase.knowledgeBaseConfiguration.managedKnowledgeBaseConfiguration.embeddingModelType",
    ),
    **_group(
        _NEW_NAME,
        "bedrock.CreateCustomModel.modelName",
        "bedrock.CreateCustomModelDeployment.modelDeploymentName",
        "bedrock.CreateInferenceProfile.inferenceProfileName",
        "bedrock.CreateModelCopyJob.targetModelName",
        "bedrock.CreateModelCustomizationJob.customModelName",
        "bedrock.CreateModelImportJob.importedModelName",
        "bedrock.CreateModelInvocationJob.jobName",
        "bedrock.CreatePromptRouter.promptRouterName",
        "bedrock.CreateProvisionedModelThroughput.provisionedModelName",
        "bedrock.UpdateProvisionedModelThroughput.desiredProvisionedModelName",
    ),
    **_group(
        "free-text description of the resource the call creates",
        "bedrock.CreateCustomModelDeployment.description",
        "bedrock.CreateInferenceProfile.description",
        "bedrock.CreatePromptRouter.description",
    ),
    **_group(
        _KMS,
        "bedrock.CreateCustomModel.modelKmsKeyArn",
        "bedrock.CreateModelCopyJob.modelKmsKeyId",
        "bedrock.CreateModelCustomizationJob.customModelKmsKeyId",
        "bedrock.CreateModelImportJob.importedModelKmsKeyId",
    ),
    "bedrock.CreateCustomModel.customModelDataSource.modelPackageArnDataSource.modelPackageArn": (
        "SageMaker model package whose artifacts the new custom model is made from (like the S3 "
        "weights of CreateModelImportJob), not a Bedrock model"
    ),
    "bedrock.CreateEvaluationJob.inferenceConfig.models.bedrockModel.inferenceParams": (
        "JSON string of inference parameters for the evaluated model"
    ),
    "bedrock.CreateModelInvocationJob.clientRequestToken": "idempotency token",
    "bedrock.CreateModelInvocationJob.modelInvocationType": "enum (Converse or InvokeModel request format)",
    **_group(
        "generic taggable resource ARN (jobs, guardrails, agents, ... as well as models); "
        "tagging neither invokes nor changes a model",
        "bedrock.ListTagsForResource.resourceARN",
        "bedrock.TagResource.resourceARN",
        "bedrock.UntagResource.resourceARN",
    ),
    **_group(
        "job identifier (the job's shape name says Model), not a model",
        "bedrock.GetModelCopyJob.jobArn",
        "bedrock.GetModelCustomizationJob.jobIdentifier",
        "bedrock.GetModelImportJob.jobIdentifier",
        "bedrock.GetModelInvocationJob.jobIdentifier",
        "bedrock.StopModelCustomizationJob.jobIdentifier",
        "bedrock.StopModelInvocationJob.jobIdentifier",
    ),
    **_group(
        _LIST_FILTER,
        "bedrock.ListCustomModelDeployments.modelArnEquals",
        "bedrock.ListCustomModelDeployments.nameContains",
        "bedrock.ListCustomModelDeployments.sortBy",
        "bedrock.ListCustomModelDeployments.statusEquals",
        "bedrock.ListCustomModels.baseModelArnEquals",
        "bedrock.ListCustomModels.foundationModelArnEquals",
        "bedrock.ListCustomModels.modelStatus",
        "bedrock.ListCustomModels.nameContains",
        "bedrock.ListCustomModels.sortBy",
        "bedrock.ListFoundationModels.byCustomizationType",
        "bedrock.ListFoundationModels.byOutputModality",
        "bedrock.ListImportedModels.nameContains",
        "bedrock.ListImportedModels.sortBy",
        "bedrock.ListInferenceProfiles.type",
        "bedrock.ListMarketplaceModelEndpoints.modelSourceIdentifier",
        "bedrock.ListModelCopyJobs.outputModelNameContains",
        "bedrock.ListModelCopyJobs.sourceModelArnEquals",
        "bedrock.ListModelCopyJobs.statusEquals",
        "bedrock.ListModelImportJobs.statusEquals",
        "bedrock.ListModelInvocationJobs.nameContains",
        "bedrock.ListModelInvocationJobs.statusEquals",
        "bedrock.ListPromptRouters.type",
        "bedrock.ListProvisionedModelThroughputs.modelArnEquals",
        "bedrock.ListProvisionedModelThroughputs.nameContains",
        "bedrock.ListProvisionedModelThroughputs.sortBy",
        "bedrock.ListProvisionedModelThroughputs.statusEquals",
    ),
}

# Recursive shapes (a flow's loop node holds a whole flow definition; retrieval filters nest)
# are unrolled until a structure occurs this many times on the path. Where the unrolling stops
# above a model member, the path is an "undetermined" path of the operation: a body with a value
# there may name models the table does not list, and the gateway treats its models as unknown.
MAX_SHAPE_OCCURRENCES = 3


@dataclasses.dataclass(frozen=True)
class Cut:
    """Where `_walk` stopped unrolling a recursive structure that holds a model member."""

    path: tuple


@dataclasses.dataclass(frozen=True)
class Member:
    """A string member of an operation's input."""

    service: str
    operation: str
    location: str  # "body", "uri", "querystring", "header"
    path: tuple  # body: JSON keys from the top of the body; otherwise (wire name,)
    member: str
    shape: str
    pattern: str
    under_map: bool  # a map value is on the path: no key path reaches it

    @property
    def key(self) -> str:
        return ".".join((self.service, self.operation, *self.path))

    def looks_like_model(self) -> bool:
        return bool(
            MODEL_NAMES.search(self.member)
            or MODEL_NAMES.search(self.shape)
            or MODEL_ARN_PATTERN.search(self.pattern)
        )

    def included(self) -> bool:
        return self.shape in INCLUDED_SHAPES or (self.shape, self.member) in INCLUDED_MEMBERS


def _is_document(shape) -> bool:
    return bool(shape.metadata.get("document"))


def _holds_model(shape, visited=frozenset()) -> bool:
    """Whether an INCLUDED string member is anywhere below `shape` (however deep)."""
    if _is_document(shape) or shape.serialization.get("eventstream") or shape.name in visited:
        return False
    visited = visited | {shape.name}
    kind = shape.type_name
    if kind == "structure":
        return any(
            (child.type_name == "string"
             and (child.name in INCLUDED_SHAPES or (child.name, name) in INCLUDED_MEMBERS))
            or _holds_model(child, visited)
            for name, child in shape.members.items()
        )
    if kind == "list":
        return _holds_model(shape.member, visited)
    if kind == "map":
        return _holds_model(shape.value, visited)
    return False


def _walk(make, shape, path, member, counts, under_map):
    """Yields the string members at and below `shape` (reached by `path` as `member`), and a
    `Cut` where a recursive structure holding a model member is not unrolled further."""
    if _is_document(shape) or shape.serialization.get("eventstream"):
        return  # opaque: a JSON document of any shape, or an event stream (not JSON)
    kind = shape.type_name
    if kind == "structure":
        seen = counts.get(shape.name, 0)
        if seen >= MAX_SHAPE_OCCURRENCES:
            if _holds_model(shape):
                yield Cut(tuple(path))
            return
        inner = {**counts, shape.name: seen + 1}
        for name, child in shape.members.items():
            wire = child.serialization.get("name", name)
            yield from _walk(make, child, path + (wire,), name, inner, under_map)
    elif kind == "list":
        yield from _walk(make, shape.member, path, member, counts, under_map)
    elif kind == "map":
        yield from _walk(make, shape.value, path + ("*",), member, counts, True)
    elif kind == "string":
        yield make(path, member, shape, under_map)


def input_members(service: str, operation_model):
    """Every string member of an operation's input: URI labels, query and header members, and
    the members of the JSON body."""
    shape = operation_model.input_shape
    if shape is None:
        return

    def maker(location):
        def make(path, member, string_shape, under_map):
            return Member(
                service,
                operation_model.name,
                location,
                tuple(path),
                member,
                string_shape.name,
                string_shape.metadata.get("pattern", ""),
                under_map,
            )

        return make

    payload = shape.serialization.get("payload")
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location:
            yield from _walk(maker(location), member, (wire,), name, {}, location == "headers")
        elif payload is None:
            yield from _walk(maker("body"), member, (wire,), name, {shape.name: 1}, False)
        elif name == payload and member.type_name == "structure":
            # The body is this member itself, not an object holding it.
            yield from _walk(maker("body"), member, (), name, {shape.name: 1}, False)


@dataclasses.dataclass(frozen=True)
class Row:
    service: str
    method: str
    path: str
    name: str
    model_segment: object  # int or None
    body_models: tuple  # of tuples of JSON keys
    undetermined: tuple  # of tuples of JSON keys (see Cut)
    literals: int


@dataclasses.dataclass
class Derivation:
    rows: list
    members: list  # every string member of every input
    unclassified: list  # model-like members neither included nor excluded
    stale_exclusions: list  # EXCLUDED keys that match no model-like member
    errors: list  # included members the table cannot express


def path_pattern(uri: str, model_labels: set):
    """The path pattern of a request URI, and the segments holding a label in model_labels."""
    path = uri.split("?")[0]
    segments = path.lstrip("/").split("/")
    out, models = [], []
    for i, segment in enumerate(segments):
        label = re.fullmatch(r"\{([^}+]+)(\+?)\}", segment)
        if label:
            out.append("**" if label.group(2) else "*")
            if label.group(1) in model_labels:
                models.append(i)
        else:
            out.append(segment)
    return "/" + "/".join(out), models


def derive(session=None) -> Derivation:
    session = session or botocore.session.get_session()
    rows, members, unclassified, errors = [], [], [], []
    excluded_seen = set()
    for service in SERVICES:
        model = session.get_service_model(service)
        for name in model.operation_names:
            operation = model.operation_model(name)
            labels, body, cuts = set(), set(), set()
            for member in input_members(service, operation):
                if isinstance(member, Cut):
                    cuts.add(member.path)
                    continue
                members.append(member)
                if member.key in EXCLUDED:
                    excluded_seen.add(member.key)
                    continue
                if not member.included():
                    if member.looks_like_model():
                        unclassified.append(member)
                    continue
                if member.under_map:
                    errors.append(f"{member.key}: names a model under a map value")
                elif member.location == "uri":
                    labels.add(member.path[0])
                elif member.location == "body":
                    body.add(member.path)
                else:
                    errors.append(f"{member.key}: names a model in the {member.location}")
            http = operation.http
            path, segments = path_pattern(http["requestUri"], labels)
            if len(segments) > 1:
                errors.append(f"{service}.{name}: more than one model label in {http['requestUri']}")
            literals = sum(1 for s in path.split("/") if s and "*" not in s)
            rows.append(
                Row(
                    service,
                    http["method"],
                    path,
                    name,
                    segments[0] if segments else None,
                    tuple(sorted(body, key=lambda p: (len(p), p))),
                    tuple(sorted(cuts, key=lambda p: (len(p), p))),
                    literals,
                )
            )
    # Per service, more literal segments first, so a specific path wins over a generic one.
    rows.sort(key=lambda r: (SERVICES.index(r.service), -r.literals, r.path, r.method))
    looked = {m.key for m in members if m.looks_like_model()}
    stale = sorted(key for key in EXCLUDED if key not in excluded_seen or key not in looked)
    return Derivation(rows, members, unclassified, stale, errors)


def _rust_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(rows) -> str:
    lines = [
        f"// Generated by scripts/dev/gen_operations.py from botocore {botocore.__version__}. Do not edit.",
        "//! Bedrock operations by service, method and path pattern (`*` = one segment), with the",
        "//! index of the path segment holding a model, if any, the JSON key paths of the request",
        "//! body that name a model (shallowest first), and the key paths below which the body may",
        "//! name models the table does not list (recursive structures, unrolled only so far).",
        "",
        "use super::rule::OperationRule;",
        "",
        "pub(super) const OPERATIONS: &[OperationRule] = &[",
    ]
    for row in rows:
        segment = "None" if row.model_segment is None else f"Some({row.model_segment})"
        def paths(items):
            return ", ".join("&[" + ", ".join(_rust_str(k) for k in p) + "]" for p in items)

        lines.append(
            f"    OperationRule {{ service: {_rust_str(row.service)}, method: {_rust_str(row.method)}, "
            f"path: {_rust_str(row.path)}, name: {_rust_str(row.name)}, model_segment: {segment}, "
            f"body_models: &[{paths(row.body_models)}], undetermined: &[{paths(row.undetermined)}] }},"
        )
    lines.append("];")
    return "\n".join(lines) + "\n"


def problems(derivation: Derivation) -> list:
    out = list(derivation.errors)
    for m in derivation.unclassified:
        out.append(
            f"{m.key}: looks like a model reference (member {m.member}, shape {m.shape}, "
            f"{m.location}) but is neither INCLUDED nor EXCLUDED"
        )
    for key in derivation.stale_exclusions:
        out.append(f"{key}: in EXCLUDED but no such model-like member")
    return out


def generate() -> str:
    """The text of table.rs (before rustfmt) for the installed botocore."""
    derivation = derive()
    found = problems(derivation)
    if found:
        raise ValueError("\n".join(found))
    return render(derivation.rows)


def main():
    try:
        text = generate()
    except ValueError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
