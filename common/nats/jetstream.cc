#include "nats/jetstream.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace wf {
namespace {

constexpr const char* kTokenHeader = "Wf-Publish-Token";

}  // namespace

std::string JsErrorText(natsStatus status, jsErrCode code) {
  std::string text = NatsStatusText(status);
  if (code != 0) text += " (jetstream error " + std::to_string(static_cast<int>(code)) + ")";
  return text;
}

Result<std::unique_ptr<JetStream>> JetStream::Create(NatsConnection& conn) {
  std::unique_ptr<JetStream> self(new JetStream());
  jsOptions opts;
  jsOptions_Init(&opts);
  opts.PublishAsync.AckHandler = &JetStream::OnAck;
  opts.PublishAsync.AckHandlerClosure = self.get();
  opts.PublishAsync.MaxPending = 65536;
  opts.Wait = 5000;
  natsStatus s = natsConnection_JetStream(&self->js_, conn.raw(), &opts);
  if (s != NATS_OK) {
    return Error{ErrorCode::kUnavailable, "JetStream context: " + NatsStatusText(s)};
  }
  return self;
}

JetStream::~JetStream() {
  if (js_) {
    jsPubOptions opts;
    jsPubOptions_Init(&opts);
    opts.MaxWait = 2000;
    js_PublishAsyncComplete(js_, &opts);
    jsCtx_Destroy(js_);
  }
  // Whatever was not acknowledged by now is reported as failed.
  std::unordered_map<uint64_t, JsPublishDone> left;
  {
    std::lock_guard lock(mu_);
    left.swap(pending_);
  }
  for (auto& [token, done] : left) {
    done(Status(ErrorCode::kUnavailable, "JetStream publish not acknowledged before shutdown"),
         false);
  }
}

std::string JetStreamName(std::string_view subject_prefix, std::string_view role) {
  std::string name;
  name.reserve(subject_prefix.size() + 1 + role.size());
  for (char c : subject_prefix) {
    if (c >= 'a' && c <= 'z') {
      name.push_back(static_cast<char>(c - 'a' + 'A'));
    } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-') {
      name.push_back(c);
    } else {
      name.push_back('_');
    }
  }
  name.append("_").append(role);
  return name;
}

namespace {

std::string SubjectList(const std::vector<std::string>& subjects) {
  std::string text = "[";
  for (const auto& s : subjects) text.append(text.size() > 1 ? ", " : "").append(s);
  return text + "]";
}

}  // namespace

Status JetStream::EnsureStream(const StreamSpec& spec) {
  {
    // Never take over a stream that serves other subjects: a deployment with another subject
    // prefix on the same server would silently lose its queue.
    jsStreamInfo* existing = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&existing, js_, spec.name.c_str(), nullptr, &jerr);
    if (s == NATS_OK && existing != nullptr) {
      std::vector<std::string> theirs;
      if (existing->Config != nullptr) {
        for (int i = 0; i < existing->Config->SubjectsLen; ++i) {
          theirs.emplace_back(existing->Config->Subjects[i]);
        }
      }
      jsStreamInfo_Destroy(existing);
      std::vector<std::string> sorted_theirs = theirs, sorted_ours = spec.subjects;
      std::sort(sorted_theirs.begin(), sorted_theirs.end());
      std::sort(sorted_ours.begin(), sorted_ours.end());
      if (sorted_theirs != sorted_ours) {
        return Status(ErrorCode::kBadRequest,
                      "JetStream stream " + spec.name + " already exists for subjects " +
                          SubjectList(theirs) + ", not " + SubjectList(spec.subjects) +
                          " (another deployment's subject_prefix?); refusing to change it");
      }
    } else if (existing != nullptr) {
      jsStreamInfo_Destroy(existing);
    }
  }
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = spec.name.c_str();
  std::vector<const char*> subjects;
  for (const auto& s : spec.subjects) subjects.push_back(s.c_str());
  cfg.Subjects = subjects.data();
  cfg.SubjectsLen = static_cast<int>(subjects.size());
  cfg.Retention = spec.work_queue ? js_WorkQueuePolicy : js_LimitsPolicy;
  cfg.Storage = js_FileStorage;
  cfg.MaxAge = std::chrono::duration_cast<std::chrono::nanoseconds>(spec.max_age).count();
  cfg.Duplicates =
      std::chrono::duration_cast<std::chrono::nanoseconds>(spec.duplicate_window).count();
  cfg.MaxMsgs = spec.max_msgs;
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(&info, js_, &cfg, nullptr, &jerr);
  if (s != NATS_OK && jerr == JSStreamNameExistErr) {
    jerr = static_cast<jsErrCode>(0);
    s = js_UpdateStream(&info, js_, &cfg, nullptr, &jerr);
  }
  if (info) jsStreamInfo_Destroy(info);
  if (s != NATS_OK) {
    return Status(ErrorCode::kUnavailable,
                  "cannot create JetStream stream " + spec.name + ": " + JsErrorText(s, jerr));
  }
  return Status::Ok();
}

void JetStream::PublishAsync(const std::string& subject, std::string_view data,
                             const std::string& msg_id, const NatsHeaders& headers,
                             JsPublishDone done) {
  uint64_t token;
  {
    std::lock_guard lock(mu_);
    token = ++next_token_;
    pending_.emplace(token, std::move(done));
  }
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(),
                                static_cast<int>(data.size()));
  std::string token_text = std::to_string(token);
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, kTokenHeader, token_text.c_str());
  for (const auto& [name, value] : headers) {
    if (s == NATS_OK && !value.empty()) s = natsMsgHeader_Set(msg, name.c_str(), value.c_str());
  }
  jsPubOptions opts;
  jsPubOptions_Init(&opts);
  if (!msg_id.empty()) opts.MsgId = msg_id.c_str();
  if (s == NATS_OK) s = js_PublishMsgAsync(js_, &msg, &opts);
  if (msg) DestroyNatsMsg(msg);  // still ours only when the publish failed
  if (s != NATS_OK) {
    JsPublishDone cb;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(token);
      if (it != pending_.end()) {
        cb = std::move(it->second);
        pending_.erase(it);
      }
    }
    if (cb) cb(Status(ErrorCode::kUnavailable, "JetStream publish: " + NatsStatusText(s)), false);
  }
}

void JetStream::OnAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* self = static_cast<JetStream*>(closure);
  const char* token_text = nullptr;
  JsPublishDone cb;
  if (natsMsgHeader_Get(msg, kTokenHeader, &token_text) == NATS_OK && token_text) {
    uint64_t token = std::strtoull(token_text, nullptr, 10);
    std::lock_guard lock(self->mu_);
    auto it = self->pending_.find(token);
    if (it != self->pending_.end()) {
      cb = std::move(it->second);
      self->pending_.erase(it);
    }
  }
  DestroyNatsMsg(msg);
  if (!cb) return;
  try {
    if (pa) {
      cb(Status::Ok(), pa->Duplicate);
    } else {
      std::string why = pae ? JsErrorText(pae->Err, pae->ErrCode) : "unknown";
      if (pae && pae->ErrText) why += std::string(": ") + pae->ErrText;
      cb(Status(ErrorCode::kUnavailable, "JetStream did not store the message: " + why), false);
    }
  } catch (const std::exception& e) {
    spdlog::error("JetStream ack callback threw: {}", e.what());
  }
}

}  // namespace wf
