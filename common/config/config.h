#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error/error.h"

namespace wf {

/// One parameter of a flow, tool or skill, taken from its `parameters` JSON Schema.
struct ParameterSpec {
  std::string name;
  /// "string", "number", "integer", "boolean", "object", "array", or "" (any type).
  std::string type;
  std::string description;
  /// The schema's `default`, already checked to match `type`.
  std::optional<nlohmann::json> default_value;
  bool required = false;
  /// The property's `enum`, if any (an array; already checked to match `type`).
  std::optional<nlohmann::json> enum_values;
};

/// The outbound HTTP call of a flow or tool. Strings are templates (see templating/template.h);
/// their placeholder syntax has been validated.
struct EndpointConfig {
  std::string url;             ///< Template; http:// or https://, no placeholder in scheme/host.
  std::string method = "GET";  ///< GET, POST, PUT, PATCH or DELETE (upper case).
  /// Header name -> value template, in config order. Names are RFC 7230 tokens.
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<nlohmann::json> body;        ///< JSON template (strings may hold placeholders).
  std::chrono::milliseconds timeout{5000};   ///< "timeout_ms", 1..600000, default 5000.
  std::size_t max_response_bytes = 1 << 20;  ///< "max_response_bytes", 1..256 MiB, default 1 MiB.
};

/// A deterministic flow: regex trigger patterns, one HTTP call, an answer template.
struct FlowConfig {
  std::string flow_id;      ///< [A-Za-z0-9_-]{1,64}; unique among flows, tools and skills.
  std::string name;         ///< Default: flow_id.
  std::string description;  ///< Default: "".
  std::vector<std::string> trigger_patterns;  ///< RE2 syntax, non-empty, each one compiles.
  /// As configured, or {"type":"object","properties":{}}: what the LLM is shown.
  nlohmann::json parameters_schema;
  /// The schema's properties in config order, then every named capture group of the trigger
  /// patterns that is not a property (type "" = any, in order of first appearance).
  std::vector<ParameterSpec> parameters;
  EndpointConfig endpoint;
  std::string response_template = "{result}";
  /// Names of all named capture groups of all trigger patterns, in order of first appearance.
  std::vector<std::string> capture_groups;
};

/// A tool the agent may call; runs on the lightweight pool (wf.tool.execute).
struct ToolConfig {
  std::string name;  ///< [A-Za-z0-9_-]{1,64}; unique among flows, tools and skills.
  std::string description;
  nlohmann::json parameters_schema;       ///< As configured, or an empty object schema.
  std::vector<ParameterSpec> parameters;  ///< The schema's properties in config order.
  EndpointConfig endpoint;
  std::string response_template = "{result}";
};

/// A named instruction set the agent may invoke ("skills": [...]).
struct SkillConfig {
  std::string name;  ///< [A-Za-z0-9_-]{1,64}; unique among flows, tools and skills.
  std::string description;
  std::string mode = "agent";  ///< "agent" (a sub-agent) | "function" (one LLM call, JSON output).
  /// Inline "instructions", or the text of "instructions_file" (relative to the config file's
  /// directory) with a leading YAML front matter block ("---\n...\n---\n") removed. Exactly one
  /// of the two keys is required; the text must not be empty.
  std::string instructions;
  /// Names of flows, tools or other skills the skill may call; each exists, none is the skill
  /// itself, and skills never reach themselves through this list (no cycles). Empty = no tools.
  std::vector<std::string> allowed_tools;
  std::string model;  ///< Optional override; "" = the agent's model.
  /// "parameters": the input the agent passes. Default
  /// {"type":"object","properties":{"input":{"type":"string"}},"required":["input"]}.
  nlohmann::json parameters_schema;
  /// Required for mode "function" (a JSON Schema subset, see ParseConfig), forbidden for "agent".
  std::optional<nlohmann::json> output_schema;
  std::vector<ParameterSpec> parameters;  ///< The input schema's properties in config order.
};

/// The router agent ("agent": {...}); every field optional.
struct AgentConfig {
  std::string system_prompt =
      "You are a helpful assistant. Use the available tools when they help to answer the "
      "user's request, and answer concisely in the user's language.";
  std::string model;                                ///< "" = from LLM_MODEL.
  double temperature = 0.2;                         ///< 0..2.
  int max_tool_rounds = 8;                          ///< 1..64.
  std::chrono::milliseconds turn_timeout{120000};   ///< "turn_timeout_ms", 1000..3600000.
  int history_max_messages = 50;                    ///< 1..10000.
  std::size_t history_max_chars = 48000;            ///< 1000..10000000.
  std::string on_busy = "reject";                   ///< "reject" | "enqueue".
  std::chrono::milliseconds session_ttl{86400000};  ///< "session_ttl_ms", 1000..31536000000.
  /// 1024..33554432 (the LLM stream limit): the most text one model call may produce, answer
  /// content and tool-call arguments together. Past it the call is cut off and the turn fails
  /// (`llm_error`), its partial answer stored cut to this size. Every copy of an answer (the
  /// streamed text, the turn's record, the Redis and PostgreSQL writes) is bounded by it.
  std::size_t max_answer_bytes = 1 << 20;
};

/// HTTP front end limits ("gateway": {...}); every field optional.
struct GatewayConfig {
  std::size_t max_body_bytes = 1 << 20;  ///< 413 above; 1..67108864.
  std::size_t max_message_chars = 8000;  ///< 400 above (UTF-8 code points); 1..1000000.
  /// "flow_timeout_ms" 1..600000: how long the gateway waits for a lightweight worker to decide
  /// a query (answer it with a flow, or queue it for the agents) before it answers 504 itself;
  /// also passed to the worker as the query's route deadline. When absent: the longest flow
  /// timeout plus 1 s, at least 10 s. When set: at least every flow's `endpoint.timeout_ms`.
  std::chrono::milliseconds flow_timeout{10000};
  /// "request_read_timeout_ms" 100..600000, default 60000: how long a connection may take to
  /// send a whole request (head and body) from its first byte, or its first request from the
  /// moment it connected; past it the gateway answers 408 `request_timeout` and closes it.
  std::chrono::milliseconds request_read_timeout{60000};
  /// "max_buffered_bytes_per_connection" 16384..1073741824, default 1048576 (1 MiB): response
  /// bytes the gateway holds for one connection whose socket does not take them (a client that
  /// reads slowly or not at all). A write that would pass it drops the connection (and cancels
  /// its query); one answer larger than it still goes out whole when nothing else is waiting.
  std::size_t max_buffered_bytes_per_connection = 1 << 20;
};

/// The whole validated configuration. Immutable once built by ParseConfig; share it as
/// std::shared_ptr<const Config> and read it from any thread.
struct Config {
  std::string subject_prefix = "wf";  ///< [A-Za-z0-9_-]{1,64}.
  std::vector<FlowConfig> flows;
  std::vector<ToolConfig> tools;
  std::vector<SkillConfig> skills;
  AgentConfig agent;
  GatewayConfig gateway;
  std::string source_path;  ///< The file it was loaded from ("" when parsed from text).
  /// Valid but probably unintended, each "<json path>: <what>": a placeholder in an endpoint or
  /// response template that names no declared parameter or capture group (only a request's
  /// `parameters` can fill it). Shown by ConfigSummary, i.e. by `--check-config`.
  std::vector<std::string> warnings;

  /// The flow with this id, or nullptr. Linear scan; safe on any thread.
  const FlowConfig* FindFlow(std::string_view id) const;
  /// The tool with this name, or nullptr.
  const ToolConfig* FindTool(std::string_view name) const;
  /// The skill with this name, or nullptr.
  const SkillConfig* FindSkill(std::string_view name) const;
};

/// Parses and validates a workflow config (format: ARCHITECTURE.md "Configuration").
///
/// Strict: malformed JSON (reported with line and column), a duplicate key, an unknown field at
/// any level, a wrong type or an out-of-range value is an error, as is a trigger pattern RE2
/// rejects (look-around and back-references get a clear hint), a duplicate flow/tool/skill name,
/// an invalid `parameters` schema, a `required` parameter nobody declares, a placeholder syntax
/// error in url/headers/body/response_template, `{result}` outside response_template, or a skill
/// `allowed_tools` entry that does not exist. A placeholder naming no declared parameter or
/// capture group is valid (a request's `parameters` may supply it) and listed in `warnings`.
///
/// Supported JSON Schema subset for `parameters` (top level): {"type":"object", "properties":
/// {...}, "required":[...], "description", "title", "additionalProperties": bool}. Each property:
/// {"type": one of string|number|integer|boolean|object|array (absent = any), "description",
/// "title", "default" (must match the type), "enum" (non-empty array of values of the type),
/// "items" (array only; a property schema), "properties"/"required"/"additionalProperties"
/// (object only)}. Any other keyword is rejected. Top-level property names are
/// [A-Za-z_][A-Za-z0-9_]{0,63} and must not be the reserved user_message, session_id or result.
///
/// `base_dir` resolves relative `instructions_file` paths. Pure; callable from any thread.
/// Errors: kBadRequest with the message "<json path>: <reason>", e.g.
/// "flows[3].trigger_patterns[1]: invalid regex: missing ): (?P<x".
Result<std::shared_ptr<const Config>> ParseConfig(std::string_view json_text,
                                                  std::string base_dir = ".");

/// Reads `path` (at most 16 MiB) and parses it with ParseConfig, relative paths resolved against
/// the file's directory; sets `source_path`. Errors: kBadRequest "config file not found: PATH",
/// "cannot read config file PATH: <reason>", or ParseConfig's errors.
Result<std::shared_ptr<const Config>> LoadConfigFile(const std::string& path);

/// What a loaded config holds, for `--check-config`: "9 flows, 2 tools, 1 skill", followed by
/// "; N warnings:" and one indented line per warning when there are any. Pure.
std::string ConfigSummary(const Config& config);

}  // namespace wf
