// scripts/demo.sh and scripts/test.sh, run on a copy of scripts/ with stub commands first on PATH
// (cmake records its arguments and writes a stub `hisa`; dpkg-query reports every package present;
// nvidia-smi lists a GPU or none), so that what they build and print is checked in a second.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace hisa {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct ScriptRun {
  int code;
  std::string out;    // stdout and stderr together
  std::string cmake;  // the stub cmake's calls, one a line
};

void write_exe(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  fs::permissions(p, fs::perms::owner_all);
}

// Runs `bash scripts/<script> <args>` in a fresh copy of the repository's scripts.
ScriptRun run_script(const std::string& script, const std::string& args, bool gpu) {
  static int run = 0;
  const fs::path dir = fs::temp_directory_path() /
                       ("hisa_scripts_" + std::to_string(::getpid()) + "_" + std::to_string(run++));
  fs::remove_all(dir);
  fs::create_directories(dir / "repo" / "scripts");
  fs::create_directories(dir / "bin");
  for (const char* s : {"build.sh", "demo.sh", "deps.sh", "test.sh"})
    fs::copy_file(fs::path(HISA_SOURCE_DIR) / "scripts" / s, dir / "repo" / "scripts" / s);
  const std::string log = (dir / "cmake.log").string();
  write_exe(
      dir / "bin" / "cmake",
      "#!/bin/sh\n"
      "echo \"cmake $*\" >> " +
          log +
          "\n"
          "if [ \"$1\" = --build ]; then\n"
          "  echo '[1/2] Building CXX object a.o'; echo '[2/2] Linking CXX executable hisa'\n"
          "  printf '#!/bin/sh\\necho \"stub hisa: $*\"\\n' > \"$2/hisa\"; chmod +x \"$2/hisa\"\n"
          "else echo '-- hisa: CUDA backend OFF (CPU backends only)'; fi\n");
  write_exe(dir / "bin" / "ctest", "#!/bin/sh\necho \"stub ctest: $*\"\n");
  write_exe(dir / "bin" / "python3", "#!/bin/sh\necho \"stub python3: $*\"\n");
  write_exe(dir / "bin" / "dpkg-query", "#!/bin/sh\necho 'install ok installed'\n");
  write_exe(dir / "bin" / "nvidia-smi",
            gpu ? "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n"
                : "#!/bin/sh\necho 'No devices were found'\nexit 6\n");
  const std::string cmd =
      "cd " + (dir / "repo").string() +
      " && env -u HISA_BUILD_DIR -u HISA_CMAKE_ARGS -u HISA_TARGETS -u HISA_CUDA "
      "-u HISA_TESTS -u HISA_PYTHON HISA_PYTHON_EXE=" +
      (dir / "bin" / "python3").string() + " PATH=" + (dir / "bin").string() +
      ":$PATH bash scripts/" + script + " " + args + " 2>&1";
  ScriptRun r{0, "", ""};
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::stringstream ss;
  ss << std::ifstream(log).rdbuf();
  r.cmake = ss.str();
  fs::remove_all(dir);
  return r;
}

TEST(Scripts, DemoWithoutAGpuBuildsOnlyTheCommandWithoutCudaAndShowsEachStep) {
  const ScriptRun r = run_script("demo.sh", "--device cpu", false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.cmake, HasSubstr("-B build-demo"));
  EXPECT_THAT(r.cmake, HasSubstr("-DHISA_CUDA=OFF"));
  EXPECT_THAT(r.cmake, HasSubstr("-DHISA_TESTS=OFF"));
  EXPECT_THAT(r.cmake, HasSubstr("--build build-demo -j"));
  EXPECT_THAT(r.cmake, HasSubstr("--target hisa_cli"));
  // Every step as it happens, the build's progress count, then the demo itself.
  for (const char* line : {"==> no GPU", "==> dependencies", "deps: all present",
                           "==> configuring build-demo", "==> building hisa_cli", "[2/2] Linking",
                           "==> running: build-demo/hisa demo", "stub hisa: demo --device cpu"})
    EXPECT_THAT(r.out, HasSubstr(line)) << r.out;
}

TEST(Scripts, DemoWithAGpuBuildsOnlyTheCommandWithCuda) {
  const ScriptRun r = run_script("demo.sh", "", true);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.cmake, HasSubstr("-B build -G Ninja"));
  EXPECT_THAT(r.cmake, HasSubstr("-DHISA_CUDA=AUTO"));
  EXPECT_THAT(r.cmake, HasSubstr("--target hisa_cli"));
  EXPECT_THAT(r.out, HasSubstr("==> GPU present (GPU 0: NVIDIA H100"));
  EXPECT_THAT(r.out, HasSubstr("stub hisa: demo"));
}

TEST(Scripts, TestBuildsEverythingWithCudaDetectedAndTheTests) {
  const ScriptRun r = run_script("test.sh", "", false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.cmake, HasSubstr("-B build -G Ninja"));
  EXPECT_THAT(r.cmake, HasSubstr("-DHISA_CUDA=AUTO"));
  EXPECT_THAT(r.cmake, HasSubstr("-DHISA_TESTS=ON"));
  EXPECT_THAT(r.cmake, HasSubstr("-DHISA_PYTHON=ON"));
  EXPECT_THAT(r.cmake, Not(HasSubstr("--target")));  // every target, the CUDA ones included
  EXPECT_THAT(r.out, HasSubstr("stub ctest: --output-on-failure"));
  // Then the Python package's pytest suite, with the interpreter the package was built for.
  EXPECT_THAT(r.cmake, HasSubstr("-DPython3_EXECUTABLE=" + fs::temp_directory_path().string()));
  EXPECT_THAT(r.out, HasSubstr("==> running the Python tests"));
  EXPECT_THAT(r.out, HasSubstr("stub python3: -m pytest -q -p no:cacheprovider python/tests"));
}

}  // namespace
}  // namespace hisa
