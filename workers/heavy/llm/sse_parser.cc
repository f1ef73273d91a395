#include "llm/sse_parser.h"

#include <utility>

namespace wf {
namespace {
constexpr std::string_view kBom = "\xEF\xBB\xBF";
}  // namespace

Status SseParser::Feed(std::string_view bytes, std::vector<SseEvent>& out) {
  if (failed_) return Status(ErrorCode::kTooLarge, "event stream exceeded its size limit");
  std::size_t i = 0;
  // A BOM may itself arrive split; match it byte by byte before anything else.
  while (at_start_ && i < bytes.size()) {
    if (bytes[i] == kBom[bom_bytes_]) {
      ++bom_bytes_;
      ++i;
      if (bom_bytes_ == kBom.size()) at_start_ = false;
    } else {
      // Not a BOM after all: the matched bytes are ordinary content.
      line_.append(kBom.substr(0, bom_bytes_));
      at_start_ = false;
    }
  }
  while (i < bytes.size()) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (bytes[i] == '\n') {
        ++i;
        continue;
      }
    }
    // Find the next line terminator in this piece.
    std::size_t j = i;
    while (j < bytes.size() && bytes[j] != '\n' && bytes[j] != '\r') ++j;
    if (line_.size() + (j - i) > max_event_bytes_) {
      failed_ = true;
      return Status(ErrorCode::kTooLarge, "event stream line exceeds " +
                                              std::to_string(max_event_bytes_) + " bytes");
    }
    if (j == bytes.size()) {
      line_.append(bytes.substr(i));
      break;
    }
    Status st;
    if (line_.empty()) {
      st = ProcessLine(bytes.substr(i, j - i), out);
    } else {
      line_.append(bytes.substr(i, j - i));
      st = ProcessLine(line_, out);
      line_.clear();
    }
    if (!st.ok()) {
      failed_ = true;
      return st;
    }
    skip_lf_ = bytes[j] == '\r';
    i = j + 1;
  }
  return Status::Ok();
}

void SseParser::Finish(std::vector<SseEvent>& out) {
  if (failed_) return;
  if (!line_.empty()) {
    std::string line = std::move(line_);
    line_.clear();
    if (!ProcessLine(line, out).ok()) return;
  }
  if (has_data_) Dispatch(out);
  data_.clear();
  has_data_ = false;
  event_type_.clear();
}

Status SseParser::ProcessLine(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    Dispatch(out);
    return Status::Ok();
  }
  if (line.front() == ':') return Status::Ok();  // comment, e.g. ": keep-alive"
  std::string_view field = line;
  std::string_view value;
  const std::size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (data_.size() + value.size() + 1 > max_event_bytes_) {
      return Status(ErrorCode::kTooLarge,
                    "event data exceeds " + std::to_string(max_event_bytes_) + " bytes");
    }
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_type_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_.assign(value);
  }
  // "retry" and unknown fields are ignored.
  return Status::Ok();
}

void SseParser::Dispatch(std::vector<SseEvent>& out) {
  if (!has_data_) {
    event_type_.clear();
    return;
  }
  SseEvent ev;
  ev.event = event_type_.empty() ? "message" : event_type_;
  ev.data = std::move(data_);
  ev.id = last_id_;
  out.push_back(std::move(ev));
  ++dispatched_;
  data_.clear();
  has_data_ = false;
  event_type_.clear();
}

}  // namespace wf
