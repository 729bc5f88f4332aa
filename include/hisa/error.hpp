// hisa: errors. Library code never exits the process; every failure is a hisa::Error.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace hisa {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace hisa

// HISA_CHECK(cond, "message", value, ...): throws hisa::Error with the streamed message when cond is
// false. Reads like a spec line at the call site.
#define HISA_CHECK(cond, ...)                                        \
  do {                                                               \
    if (!(cond)) throw ::hisa::Error(::hisa::detail::concat(__VA_ARGS__)); \
  } while (0)
