#include "llm/chat_stream_assembler.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <system_error>
#include <utility>

#include "codec/json_limits.h"
#include "codec/json_scan.h"
#include "llm/utf8.h"

namespace wf {
namespace {

/// A JSON value as a string: strings as is, numbers in their text form, anything else "".
std::string AsString(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  return {};
}

/// A token count as reported: a number, cut to [0, 2^32 - 1] and truncated; anything else 0.
std::uint32_t CountOf(double v) {
  if (!(v > 0)) return 0;
  if (v >= 4294967295.0) return 4294967295u;
  return static_cast<std::uint32_t>(v);
}

std::uint32_t AsCount(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return 0;
  return CountOf(it->get<double>());
}

constexpr const char* kUsageKeys[] = {"prompt_tokens", "completion_tokens", "total_tokens"};

// The type of a value json_scan validated, from its first byte.
bool IsObject(std::string_view value) { return !value.empty() && value.front() == '{'; }
bool IsArray(std::string_view value) { return !value.empty() && value.front() == '['; }
bool IsString(std::string_view value) { return !value.empty() && value.front() == '"'; }
bool IsNumber(std::string_view value) {
  return !value.empty() && (value.front() == '-' || (value.front() >= '0' && value.front() <= '9'));
}

/// The values of the members `names` of a validated `object` in one pass (the last of repeated
/// keys, as in a DOM); empty for a name it lacks or when it is not an object.
template <std::size_t N>
std::array<std::string_view, N> Members(std::string_view object, const char* const (&names)[N]) {
  std::array<std::string_view, N> values;
  json_scan::FindMembers(object, names, values.data());
  return values;
}

/// AsCount of a validated value text. Both this and nlohmann's reading of a number round its
/// decimal value to the nearest double (an integer DOM value converts exactly as far as it can).
std::uint32_t ScannedCount(std::string_view value) {
  if (!IsNumber(value)) return 0;
  double v = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  // Validate let only finite values through: out of range is an underflow, 0 as in nlohmann.
  if (ec != std::errc() || end != value.data() + value.size()) return 0;
  return CountOf(v);
}

}  // namespace

bool ChatStreamAssembler::ScanToolCallDelta(std::string_view call, ToolCallDelta& out) {
  const auto [index, id, function] = Members(call, {"index", "id", "function"});
  if (IsNumber(index) && index.find_first_of(".eE") == std::string_view::npos) {
    // An integer: nlohmann reads one beyond long long as unsigned or a double; leave those to it.
    const auto [end, ec] = std::from_chars(index.data(), index.data() + index.size(), out.index);
    if (ec != std::errc() || end != index.data() + index.size()) return false;
    out.has_index = true;
  }
  if (IsNumber(id)) return false;  // AsString prints integers; rare enough for the DOM
  if (IsString(id)) json_scan::AppendDecodedString(id, &out.id);
  if (!IsObject(function)) return true;
  out.has_function = true;
  const auto [name, arguments] = Members(function, {"name", "arguments"});
  if (IsString(name)) {
    out.has_name = true;
    json_scan::AppendDecodedString(name, &out.name);
  }
  if (IsObject(arguments)) return false;  // its dump() is the DOM's
  out.has_arguments = !arguments.empty();
  if (IsString(arguments)) json_scan::AppendDecodedString(arguments, &out.arguments);
  return true;
}

bool ChatStreamAssembler::ScanPlainChunk(std::string_view data, std::vector<ScannedStep>& steps) {
  if (json_scan::Validate(data) != json_scan::Verdict::kValid) return false;
  const std::string_view root = json_scan::RootValue(data);
  if (!IsObject(root)) return false;
  const auto [error, usage, choices] = Members(root, {"error", "usage", "choices"});
  if (!error.empty() && error != "null") return false;
  if (IsObject(usage)) {
    const auto counts = Members(usage, kUsageKeys);
    ScannedStep& step = steps.emplace_back();
    step.kind = ScannedStep::kUsage;
    step.prompt_tokens = ScannedCount(counts[0]);
    step.completion_tokens = ScannedCount(counts[1]);
    step.total_tokens = ScannedCount(counts[2]);
  }
  bool plain = true;
  json_scan::ForEachElement(choices, [&](std::string_view choice) {
    const auto [index, delta, finish_reason] = Members(choice, {"index", "delta", "finish_reason"});
    if (IsNumber(index) && index != "0") {
      plain = false;  // whether it is an integer other than 0 is the DOM's to say
      return false;
    }
    const auto [content, refusal, tool_calls] =
        Members(delta, {"content", "refusal", "tool_calls"});
    for (std::string_view text : {content, refusal}) {
      if (!IsString(text)) continue;
      ScannedStep& step = steps.emplace_back();
      step.kind = ScannedStep::kContent;
      json_scan::AppendDecodedString(text, &step.text);
    }
    if (IsArray(tool_calls)) {
      json_scan::ForEachElement(tool_calls, [&](std::string_view call) {
        if (!IsObject(call)) return true;  // skipped, as ApplyDelta skips it
        ScannedStep& step = steps.emplace_back();
        step.kind = ScannedStep::kToolCall;
        plain = ScanToolCallDelta(call, step.call);
        return plain;
      });
      if (!plain) return false;
    }
    if (IsString(finish_reason)) {
      ScannedStep& step = steps.emplace_back();
      step.kind = ScannedStep::kFinishReason;
      json_scan::AppendDecodedString(finish_reason, &step.text);
    }
    return true;
  });
  return plain;
}

Status ChatStreamAssembler::ApplyData(std::string_view data, const TokenFn& on_token) {
  // Nearly every chunk is content, a role or a finish reason: read without building a DOM (a
  // node per value, ~4 µs of a ~260-byte chunk here), with the same outcome as ApplyChunk.
  std::vector<ScannedStep> steps;
  if (ScanPlainChunk(data, steps)) {
    for (ScannedStep& step : steps) {
      switch (step.kind) {
        case ScannedStep::kUsage:
          SetUsage(step.prompt_tokens, step.completion_tokens, step.total_tokens);
          break;
        case ScannedStep::kContent:
          if (Status st = AppendContent(step.text, on_token); !st.ok()) return st;
          break;
        case ScannedStep::kFinishReason:
          finish_reason_ = std::move(step.text);
          break;
        case ScannedStep::kToolCall:
          if (Status st = ApplyToolCallDelta(step.call); !st.ok()) return st;
          break;
      }
    }
    return Status::Ok();
  }
  // Bounded: a chunk is copied and serialized recursively (error objects, object arguments).
  Result<nlohmann::json> chunk = ParseBoundedJson(data);
  if (!chunk.ok() && chunk.error().code == ErrorCode::kBadRequest) {
    return Status(ErrorCode::kLlmError, "LLM stream carried a chunk " + chunk.error().message);
  }
  if (!chunk.ok() || !chunk->is_object()) {
    return Status(ErrorCode::kLlmError,
                  "LLM stream carried a malformed chunk: " +
                      TruncateUtf8(SanitizeUtf8(RedactSecret(std::string(data), secret_)), 120));
  }
  return ApplyChunk(*chunk, on_token);
}

Status ChatStreamAssembler::ApplyChunk(const nlohmann::json& chunk, const TokenFn& on_token) {
  if (!chunk.is_object()) return Status(ErrorCode::kLlmError, "LLM chunk is not an object");
  if (auto err = chunk.find("error"); err != chunk.end() && !err->is_null()) {
    return Status(ErrorCode::kLlmError,
                  "LLM stream error: " + UpstreamErrorMessage(chunk.dump(), 300, secret_));
  }
  if (auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
    ApplyUsage(*usage);
  }
  auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array()) return Status::Ok();
  for (const auto& choice : *choices) {
    if (!choice.is_object()) continue;
    if (auto idx = choice.find("index");
        idx != choice.end() && idx->is_number_integer() && idx->get<long long>() != 0) {
      continue;  // we ask for n=1; anything else is not ours
    }
    if (auto delta = choice.find("delta"); delta != choice.end() && delta->is_object()) {
      if (Status st = ApplyDelta(*delta, on_token); !st.ok()) return st;
    }
    if (auto fr = choice.find("finish_reason"); fr != choice.end() && fr->is_string()) {
      finish_reason_ = fr->get<std::string>();
    }
  }
  return Status::Ok();
}

Status ChatStreamAssembler::ApplyCompletion(const nlohmann::json& completion,
                                            const TokenFn& on_token) {
  if (!completion.is_object()) return Status(ErrorCode::kLlmError, "LLM reply is not an object");
  // Rewrite choices[].message as choices[].delta and reuse the streaming path.
  nlohmann::json chunk = completion;
  if (auto choices = chunk.find("choices"); choices != chunk.end() && choices->is_array()) {
    for (auto& choice : *choices) {
      if (!choice.is_object()) continue;
      auto message = choice.find("message");
      if (message == choice.end() || !message->is_object()) continue;
      nlohmann::json delta = *message;
      if (auto calls = delta.find("tool_calls"); calls != delta.end() && calls->is_array()) {
        for (std::size_t i = 0; i < calls->size(); ++i) {
          if ((*calls)[i].is_object() && !(*calls)[i].contains("index")) (*calls)[i]["index"] = i;
        }
      }
      choice["delta"] = std::move(delta);
      choice.erase("message");
    }
  }
  return ApplyChunk(chunk, on_token);
}

Status ChatStreamAssembler::ApplyDelta(const nlohmann::json& delta, const TokenFn& on_token) {
  for (const char* key : {"content", "refusal"}) {
    auto it = delta.find(key);
    if (it != delta.end() && it->is_string()) {
      if (Status st = AppendContent(it->get_ref<const std::string&>(), on_token); !st.ok()) {
        return st;
      }
    }
  }
  auto calls = delta.find("tool_calls");
  if (calls != delta.end() && calls->is_array()) {
    for (const auto& call : *calls) {
      if (!call.is_object()) continue;
      ToolCallDelta fields;
      if (auto idx = call.find("index"); idx != call.end() && idx->is_number_integer()) {
        fields.has_index = true;
        fields.index = idx->get<long long>();
      }
      if (auto id = call.find("id"); id != call.end()) fields.id = AsString(*id);
      if (auto fn = call.find("function"); fn != call.end() && fn->is_object()) {
        fields.has_function = true;
        if (auto name = fn->find("name"); name != fn->end() && name->is_string()) {
          fields.has_name = true;
          fields.name = name->get<std::string>();
        }
        if (auto args = fn->find("arguments"); args != fn->end()) {
          fields.has_arguments = true;
          if (args->is_string()) {
            fields.arguments = args->get<std::string>();
          } else if (args->is_object()) {
            fields.arguments = args->dump();  // some servers send the arguments as an object
          }
        }
      }
      if (Status st = ApplyToolCallDelta(fields); !st.ok()) return st;
    }
  }
  return Status::Ok();
}

Status ChatStreamAssembler::ApplyToolCallDelta(const ToolCallDelta& delta) {
  const std::string& id = delta.id;
  std::size_t pos = calls_.size();
  if (delta.has_index) {
    const long long index = delta.index;
    if (index < 0 || index > 1024) {
      return Status(ErrorCode::kLlmError, "LLM tool call index out of range");
    }
    for (std::size_t i = 0; i < calls_.size(); ++i) {
      if (calls_[i].index == index) pos = i;  // the latest call with that index
    }
    // Some servers (Ollama, ollama/ollama#15457) give every call of an answer index 0: a delta
    // bringing an id other than that of the call at its index starts a new call.
    if (pos != calls_.size() && !id.empty() && !calls_[pos].id.empty() && id != calls_[pos].id) {
      pos = calls_.size();
    }
    if (pos == calls_.size()) calls_.push_back(PendingCall{static_cast<int>(index), "", "", ""});
  } else if (!calls_.empty() && (id.empty() || id == calls_[last_call_].id)) {
    pos = last_call_;
  } else {
    int next = 0;
    for (const auto& c : calls_) next = std::max(next, c.index + 1);
    calls_.push_back(PendingCall{next, "", "", ""});
  }
  last_call_ = pos;
  PendingCall& call = calls_[pos];
  produced_output_ = true;
  // Ids and names count with the arguments: a stream of calls with ever new ids would grow the
  // answer as surely as one long argument string.
  const bool set_id = call.id.empty() && !id.empty();
  const bool set_name = delta.has_function && delta.has_name && call.name.empty();
  const std::size_t grows =
      (set_id ? id.size() : 0) + (set_name ? delta.name.size() : 0) +
      (delta.has_function && delta.has_arguments ? delta.arguments.size() : 0);
  if (grows > Room()) return TooLarge();
  tool_bytes_ += grows;
  if (set_id) call.id = id;
  if (set_name) call.name = delta.name;
  if (delta.has_function && delta.has_arguments) call.arguments += delta.arguments;
  return Status::Ok();
}

std::size_t ChatStreamAssembler::Room() const {
  const std::size_t used = content_.size() + tool_bytes_;
  return used < max_bytes_ ? max_bytes_ - used : 0;
}

Status ChatStreamAssembler::TooLarge() const {
  return Status(ErrorCode::kTooLarge,
                "LLM answer exceeded " + std::to_string(max_bytes_) + " bytes");
}

Status ChatStreamAssembler::AppendContent(std::string_view text, const TokenFn& on_token) {
  if (text.empty()) return Status::Ok();
  const bool over = text.size() > Room();
  if (over) {
    // Keep the answer up to the bound, cut where a character ends, so that the caller has the
    // longest partial answer the bound allows.
    text = text.substr(0, Room());
    text = text.substr(0, Utf8CompletePrefixLength(text));
  }
  content_.append(text);
  const std::size_t complete = Utf8CompletePrefixLength(content_);
  if (complete > emitted_) {
    const std::string_view piece = std::string_view(content_).substr(emitted_, complete - emitted_);
    emitted_ = complete;
    produced_output_ = true;
    if (on_token) on_token(piece);
  }
  return over ? TooLarge() : Status::Ok();
}

void ChatStreamAssembler::ApplyUsage(const nlohmann::json& usage) {
  SetUsage(AsCount(usage, kUsageKeys[0]), AsCount(usage, kUsageKeys[1]),
           AsCount(usage, kUsageKeys[2]));
}

void ChatStreamAssembler::SetUsage(std::uint32_t prompt, std::uint32_t completion,
                                   std::uint32_t total) {
  usage_.set_prompt_tokens(prompt);
  usage_.set_completion_tokens(completion);
  usage_.set_total_tokens(total != 0 ? total : prompt + completion);
  has_usage_ = true;
}

ChatOutcome ChatStreamAssembler::Finish(const TokenFn& on_token) {
  ChatOutcome out;
  if (emitted_ < content_.size()) {
    // An incomplete character at the very end: pass it on sanitised rather than drop it.
    const std::string tail = SanitizeUtf8(std::string_view(content_).substr(emitted_));
    content_.resize(emitted_);
    content_ += tail;
    emitted_ = content_.size();
    produced_output_ = true;
    if (on_token) on_token(tail);
  }
  out.content = SanitizeUtf8(content_);
  std::vector<PendingCall> calls = calls_;
  std::stable_sort(calls.begin(), calls.end(),
                   [](const PendingCall& a, const PendingCall& b) { return a.index < b.index; });
  for (const auto& c : calls) {
    wf::v1::ToolCall tc;
    tc.set_id(SanitizeUtf8(c.id));
    tc.set_name(SanitizeUtf8(c.name));
    tc.set_arguments_json(SanitizeUtf8(c.arguments));
    out.tool_calls.push_back(std::move(tc));
  }
  out.finish_reason = finish_reason_;
  out.usage = usage_;
  return out;
}

std::string RedactSecret(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  for (std::size_t at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + 3)) {
    text.replace(at, secret.size(), "***");
  }
  return text;
}

std::string UpstreamErrorMessage(std::string_view body, std::size_t max_bytes,
                                 std::string_view secret) {
  std::string text(body);
  Result<nlohmann::json> parsed = ParseBoundedJson(body);
  const nlohmann::json j = parsed.ok() ? std::move(parsed).value() : nlohmann::json();
  if (j.is_object()) {
    const nlohmann::json* holder = &j;
    if (auto err = j.find("error"); err != j.end()) {
      if (err->is_string()) {
        text = err->get<std::string>();
        holder = nullptr;
      } else if (err->is_object()) {
        holder = &*err;
      }
    }
    if (holder != nullptr) {
      if (auto msg = holder->find("message"); msg != holder->end() && msg->is_string()) {
        text = msg->get<std::string>();
      }
    }
  }
  return TruncateUtf8(SanitizeUtf8(RedactSecret(std::move(text), secret)), max_bytes);
}

}  // namespace wf
