#pragma once

#include <curl/curl.h>

#include <memory>

/// RAII owners of libcurl's C handles: non-copyable, movable, each freed with its own cleanup.
/// Internal to wf_common_http_client.
namespace wf::http_client_internal {

struct EasyDeleter {
  void operator()(CURL* handle) const noexcept { curl_easy_cleanup(handle); }
};
/// A CURL* easy handle. Must be removed from any multi handle before it is destroyed.
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct MultiDeleter {
  void operator()(CURLM* handle) const noexcept { curl_multi_cleanup(handle); }
};
/// A CURLM* multi handle (owns the connection cache). Destroy after every easy handle in it.
using MultiHandle = std::unique_ptr<CURLM, MultiDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};
/// A curl_slist (request header lines). Must outlive the transfer that uses it.
using HeaderList = std::unique_ptr<curl_slist, SlistDeleter>;

}  // namespace wf::http_client_internal
